"""Project infrastructure: topology checks, the worker fleet command, chord-safe results."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Workers and workflows"

    def ready(self) -> None:
        from core import checks, families, queues, worker  # noqa: F401  (checks, signals)
        from proj.celery import app

        families.install(app)  # queue families (imports.user.<id>) are known queues
