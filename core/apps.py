"""Project infrastructure: topology checks, the worker fleet command, chord-safe results."""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Workers and workflows"

    def ready(self) -> None:
        from core import checks  # noqa: F401  (registers the system checks)
