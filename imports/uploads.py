"""Refuse an oversized upload from its Content-Length, before reading any of it.

Django's upload handlers run while the request body is parsed, which the CSRF check does
before any view. This handler sees the declared length first: when it exceeds
IMPORTS_MAX_UPLOAD_BYTES, no file part is read (StopUpload without draining the body), so
a 2 GB upload costs neither disk nor memory, and the view shows the reason.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

# Form fields besides the file (CSRF token, format...) fit easily in this much.
FORM_OVERHEAD = 64 * 1024
REFUSED = "_upload_refused_size"


class SizeLimitUploadHandler(FileUploadHandler):
    def handle_raw_input(self, input_data: Any, META: Any, content_length: int, boundary: Any,
                         encoding: str | None = None) -> None:  # fmt: skip
        self.refused = content_length > settings.IMPORTS_MAX_UPLOAD_BYTES + FORM_OVERHEAD
        if self.refused and self.request is not None:
            setattr(self.request, REFUSED, content_length)

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        if getattr(self, "refused", False):
            raise StopUpload(connection_reset=True)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def refused_size(request: Any) -> int | None:
    """The declared size of an upload the handler refused, if it refused one."""
    return getattr(request, REFUSED, None)
