"""URLs: the admin is the back office; report downloads go through a checked view."""

from django.contrib import admin
from django.urls import include, path

from core import views as core_views

admin.site.site_header = "Shop back office"
admin.site.site_title = "Shop back office"

urlpatterns = [
    path("", include("core.urls")),
    path("admin/queues/", admin.site.admin_view(core_views.queues), name="queues"),
    path("admin/queues.json", admin.site.admin_view(core_views.queues_json), name="queues-json"),
    path("admin/", admin.site.urls),
    path("reports/", include("reports.urls")),
]
