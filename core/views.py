"""Plain views: liveness for load balancers, and the operators' queue page in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from core.queues import queue_overview

QUEUES_PERMISSION = "core.view_queues"


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@permission_required(QUEUES_PERMISSION, raise_exception=True)
def queues(request: HttpRequest) -> HttpResponse:
    """Every declared queue: depth, oldest message, consumers, pool, dead letters."""
    rows = queue_overview(refresh="refresh" in request.GET)
    context = {
        **admin.site.each_context(request),
        "title": "Queues",
        "rows": rows,
        "warnings": [r for r in rows if r.warning],
    }
    return TemplateResponse(request, "admin/core/queues.html", context)


@permission_required(QUEUES_PERMISSION, raise_exception=True)
def queues_json(request: HttpRequest) -> JsonResponse:
    """The same, for scripts and monitoring."""
    rows = queue_overview(refresh="refresh" in request.GET)
    return JsonResponse({"queues": [r.as_dict() for r in rows]})
