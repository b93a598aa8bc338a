from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"
    verbose_name = "Reports"

    def ready(self) -> None:
        from core import runs
        from reports import checks  # noqa: F401  (registers the report type checks)
        from reports.workflows import RUN_KIND

        runs.register(RUN_KIND)
