"""Flower with the project's rules: credentials on every page, read-only unless allowed.

`manage.py flower` runs Flower through `serve()` instead of `celery flower`, because three
things cannot be had from Flower's command line:

- `/metrics` is served without authentication by Flower itself; here it needs the same
  basic-auth credentials as every other page.
- Read-only is the default. Flower's own `read_only` option (which also hides the UI's
  buttons) is switched on unless FLOWER_ALLOW_CONTROL=1, and on top of it every request
  that is not a read (anything but GET/HEAD/OPTIONS, except the tasks table's POST) is
  refused with a 403 that says how to allow it, so a control endpoint added by a future
  Flower cannot slip through a per-handler check.
- The Broker tab lists every declared queue, not only those the running nodes consume:
  a node that is down is when its queue's backlog matters most.

Everything else is Flower's own code: its options (FLOWER_* environment variables, so the
password never appears on a command line), its application, handlers and templates.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
from typing import Any

from flower import command as flower_command
from flower.api import BaseApiHandler
from flower.api.tasks import GetQueueLengths
from flower.app import Flower
from flower.urls import settings as flower_settings
from flower.views.broker import BrokerView
from flower.views.monitor import Metrics
from tornado import httputil, web
from tornado.options import options

ALLOW_CONTROL_ENV = "FLOWER_ALLOW_CONTROL"
READ_ONLY_MESSAGE = (
    "Flower is read-only: revoking or terminating tasks, growing, shrinking, autoscaling "
    "or restarting pools, adding or cancelling consumers, shutting down workers and "
    f"changing rate or time limits are disabled. Restart Flower with {ALLOW_CONTROL_ENV}=1 "
    "to allow them.\n"
)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only read: the tasks page fetches its table rows by POST.
READING_POSTS = ("/tasks/datatable",)


class AuthenticatedMetrics(Metrics):
    """Prometheus metrics name every task and worker: same credentials as the rest."""

    @web.authenticated
    async def get(self) -> None:
        await super().get()


class ReadOnlyRefusal(BaseApiHandler):
    """What every non-read request gets in read-only mode (after authentication)."""

    @web.authenticated
    def post(self, *args: Any, **kwargs: Any) -> None:
        raise web.HTTPError(403, READ_ONLY_MESSAGE)

    put = patch = delete = post


class DeclaredQueuesMixin:
    """Queue names for the broker views: the consumed ones plus every declared one."""

    def get_active_queue_names(self) -> list[str]:
        consumed = set(super().get_active_queue_names())  # type: ignore[misc]
        conf = self.capp.conf  # type: ignore[attr-defined]
        declared = {conf.task_default_queue} | {q.name for q in conf.task_queues or ()}
        return sorted(consumed | declared)


class AllQueuesBrokerView(DeclaredQueuesMixin, BrokerView):
    pass


class AllQueueLengths(DeclaredQueuesMixin, GetQueueLengths):
    pass


def prefixed(path: str, url_prefix: str | None) -> str:
    """A path under Flower's --url_prefix, as Flower rewrites its own routes."""
    return f"/{url_prefix.strip('/')}{path}" if url_prefix else path


class ShopFlower(Flower):
    """Flower's application with the overrides above; its own routes serve the rest."""

    def __init__(self, *, allow_control: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_control = allow_control
        prefix = self.options.url_prefix
        overrides = [
            (prefixed(r"/metrics", prefix), AuthenticatedMetrics),
            (prefixed(r"/broker", prefix), AllQueuesBrokerView),
            (prefixed(r"/api/queues/length", prefix), AllQueueLengths),
        ]
        # Rules added here are matched before Flower's own (tornado's add_handlers).
        self.add_handlers(r".*", overrides)
        self.reading_posts = {prefixed(path, prefix) for path in READING_POSTS}

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        if (
            not self.allow_control
            and request.method not in READ_METHODS
            and request.path not in self.reading_posts
        ):
            return self.get_handler_delegate(request, ReadOnlyRefusal)
        return super().find_handler(request, **kwargs)


def serve(capp: Any, *, port: int, address: str, allow_control: bool) -> None:
    """Run Flower in this process until SIGTERM or Ctrl-C, as `celery flower` would."""
    # FLOWER_BASIC_AUTH and any other FLOWER_* option come from the environment.
    flower_command.apply_env_options()
    options.port = port
    options.address = address
    # Flower's own FLOWER_READ_ONLY=1 wins over FLOWER_ALLOW_CONTROL=1.
    allow_control = allow_control and not options.read_only
    options.read_only = not allow_control
    flower_command.extract_settings()
    flower_command.setup_logging()

    app = ShopFlower(capp=capp, options=options, allow_control=allow_control, **flower_settings)
    atexit.register(app.stop)
    signal.signal(signal.SIGTERM, flower_command.sigterm_handler)
    bound = app.start_http_server()
    flower_command.print_banner(capp, "ssl_options" in flower_settings, bound)
    flower_command.logger.info(
        "Control operations: %s",
        "ALLOWED (FLOWER_ALLOW_CONTROL=1)" if allow_control else "refused (read-only)",
    )
    # Flower's SIGTERM handler exits through SystemExit; atexit then stops it cleanly.
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        app.start()
