"""Infrastructure tasks."""

from celery import shared_task


@shared_task(name="core.tasks.ping")
def ping() -> str:
    """A round trip through broker, worker and result backend: health checks and tests."""
    return "pong"
