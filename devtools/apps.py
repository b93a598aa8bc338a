from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Local stand-ins (supplier, demo data): installed only with DEBUG or in tests."""

    name = "devtools"
    verbose_name = "Development tools"
