"""The Celery app: configured from Django settings (CELERY_*), tasks found in every app."""

from __future__ import annotations

import logging
import os
import warnings
from logging.handlers import WatchedFileHandler
from typing import Any

from celery import Celery
from celery.app import trace
from celery.exceptions import CPendingDeprecationWarning
from celery.signals import after_setup_logger, celeryd_after_setup, worker_ready
from celery.utils.log import ColorFormatter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Workers log that a task succeeded and how long it took, not what it returned: the run
# rows hold outcomes, and a result (a list of ids, a report's partial) is log noise.
trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


def _quiet_cancel_reminder() -> None:
    """Settings keep running tasks on a broker connection loss, deliberately (the reason is
    beside CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS): Celery's reminder
    of its other default would only alarm whoever reads the log of an outage."""
    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )


_quiet_cancel_reminder()


@worker_ready.connect
def quiet_cancel_reminder_in_workers(**kwargs: Any) -> None:
    """Again once the worker set up its logging, which puts an 'always' filter first."""
    _quiet_cancel_reminder()


class NodeLogFile(WatchedFileHandler):
    """The --logfile of a node; its own class so a pool process can swap in its own."""


@after_setup_logger.connect
def log_to_the_node_file(
    logger: logging.Logger, logfile: Any = None, format: str = "", **kwargs: Any
) -> None:
    """Make a node given --logfile (every `celery multi` node) write to that file.

    Settings keep Django's LOGGING on the root logger (worker_hijack_root_logger off), and
    Celery then adds no handler of its own: a detached node's log went to its stderr, which
    is /dev/null. Foreground workers (Procfile, tests) have no --logfile: unchanged.
    """
    for handler in [h for h in logger.handlers if isinstance(h, NodeLogFile)]:
        # A prefork pool process inherits its parent's file; `%I` gives it its own.
        logger.removeHandler(handler)
        handler.close()
    if isinstance(logfile, str) and logfile:
        handler = NodeLogFile(logfile, encoding="utf-8")
        handler.setFormatter(ColorFormatter(format or app.conf.worker_log_format, use_color=False))
        logger.addHandler(handler)


@celeryd_after_setup.connect
def log_the_banner(sender: str, instance: Any, **kwargs: Any) -> None:
    """A detached node prints its banner (queues, pool, concurrency) to /dev/null: log it."""
    if getattr(instance, "logfile", None):
        logging.getLogger("celery.apps.worker").info(
            "%s starting\n%s", sender, instance.startup_info(artlines=False)
        )
