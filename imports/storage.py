"""Private storage for import files: on disk under IMPORTS_STORAGE_ROOT, never with a URL.

`pending/` holds uploads between the dry run and Confirm (django-import-export's temporary
storage, here private and named by us); `files/` holds confirmed files, kept with the run.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from import_export.tmp_storages import BaseStorage

PENDING_NAME = re.compile(r"[0-9a-f]{32}")


def imports_root() -> Path:
    return Path(settings.IMPORTS_STORAGE_ROOT)


class PendingImportStorage(BaseStorage):
    """An upload waiting for Confirm: bytes under `pending/<random hex>`, nothing else.

    The name travels in the confirm form, so it is checked to be one of ours: a posted
    path cannot make it read or delete anything else.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.name is not None and not PENDING_NAME.fullmatch(str(self.name)):
            raise SuspiciousOperation("Not an import upload name.")

    def path(self) -> Path:
        return imports_root() / "pending" / str(self.name)

    def save(self, data: bytes) -> None:
        self.name = uuid.uuid4().hex
        self.path().parent.mkdir(parents=True, exist_ok=True)
        self.path().write_bytes(data)

    def read(self) -> bytes:
        return self.path().read_bytes()

    def remove(self) -> None:
        self.path().unlink(missing_ok=True)


def keep_confirmed(data: bytes, run_id: int) -> str:
    """Store a confirmed file for its run; the stored name (relative to the root)."""
    name = f"files/{run_id}-{uuid.uuid4().hex}.csv"
    path = imports_root() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return name


def forget_pending(*, older_than: float) -> int:
    """Delete uploads nobody confirmed within `older_than` seconds; how many."""
    folder = imports_root() / "pending"
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than
    gone = 0
    for path in folder.iterdir():
        if PENDING_NAME.fullmatch(path.name) and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def remove_all() -> None:
    """Tests only: start from an empty storage."""
    shutil.rmtree(imports_root(), ignore_errors=True)
