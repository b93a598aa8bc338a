"""Run manage.py in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from core.fleet import BASE_DIR


def manage(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, **extra: str
) -> subprocess.CompletedProcess[str]:
    full_env = dict(env if env is not None else os.environ)
    full_env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    full_env.update(extra)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
