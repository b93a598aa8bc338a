from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from core import reconciler, runs
        from notifications import checks  # noqa: F401  (registers the system checks)
        from notifications.workflows import RUN_KIND, notifications_upkeep

        runs.register(RUN_KIND)
        # Every reconciler pass (cron each minute, or the Procfile's loop) starts the
        # campaigns that are due and re-queues mail left behind.
        reconciler.register_hook(notifications_upkeep)
