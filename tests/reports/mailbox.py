"""An email backend for worker subprocesses: writes each message to a file a test reads.

Workers run in other processes, so Django's locmem outbox cannot see their mail. The
test session points DJANGO_EMAIL_BACKEND here (see conftest.py) before workers start.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.mail.backends.filebased import EmailBackend as FileEmailBackend

MAIL_DIR_ENV = "REPORTS_TEST_MAIL_DIR"


class EmailBackend(FileEmailBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file_path"] = os.environ[MAIL_DIR_ENV]
        super().__init__(*args, **kwargs)
