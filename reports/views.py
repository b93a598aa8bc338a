"""Report downloads: only through this view, only for the requester or permitted staff."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from reports.models import ReportRun
from reports.storage import report_storage

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


@require_GET
def download(request: HttpRequest, pk: int, kind: str) -> HttpResponseBase:
    """Serve run `pk`'s `kind` file. The stored name comes from the row, never the URL."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), login_url="admin:login")
    if kind not in CONTENT_TYPES:
        raise Http404("No such report file.")
    run = get_object_or_404(ReportRun, pk=pk)
    if not run.can_be_downloaded_by(request.user):
        raise PermissionDenied("You may only download your own reports.")
    name = run.file_name(kind)
    if run.status != ReportRun.Status.SUCCEEDED or not name:
        raise Http404("This report has no such file.")
    storage = report_storage()
    if not storage.exists(name):
        raise Http404("The report file is gone; re-run the report.")
    return FileResponse(
        storage.open(name, "rb"),
        as_attachment=True,
        filename=run.download_name(kind),
        content_type=CONTENT_TYPES[kind],
    )
