"""Private storage for report files: on disk under PRIVATE_STORAGE_ROOT, with no URL."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.files.storage import FileSystemStorage


class PrivateReportStorage(FileSystemStorage):
    """A FileSystemStorage that refuses to make URLs: files leave only via the view."""

    def url(self, name: str | None) -> str:
        raise ValueError("Report files are private: link to the download view instead.")


@cache
def report_storage() -> PrivateReportStorage:
    return PrivateReportStorage(location=settings.REPORTS_STORAGE_ROOT, base_url=None)
