"""URLs: the admin is the back office; report downloads go through a checked view."""

from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Shop back office"
admin.site.site_title = "Shop back office"

urlpatterns = [
    path("", include("core.urls")),
    path("admin/", admin.site.urls),
    path("reports/", include("reports.urls")),
]
