from django.urls import path

from reports import views

app_name = "reports"

urlpatterns = [
    path("runs/<int:pk>/download/<str:kind>", views.download, name="download"),
]
