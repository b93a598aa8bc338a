from django.apps import AppConfig


class ImportsConfig(AppConfig):
    name = "imports"
    verbose_name = "Catalogue imports"

    def ready(self) -> None:
        from core import reconciler, runs
        from imports import fair, worker  # noqa: F401  (connects the worker start-up signal)
        from imports.workflows import RUN_KIND

        runs.register(RUN_KIND)
        reconciler.register_hook(fair.fair_upkeep)
