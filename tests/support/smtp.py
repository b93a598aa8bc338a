"""The SMTP sink every worker of the session sends to, and the fixture that reads it.

Imported by the conftests of the packages that need mail (at collection, before the
session's worker fleet starts): it points the workers' email settings at a port chosen
here, and the sink listens there from then on: tests that do not ask for it still make
the workers send (a failed refresh mails its requester), and a port chosen but not held
could be refused or taken by another server meanwhile. One sink per session, however
many conftests import this module; tests tell their messages apart by address.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator

import pytest

from devtools.redis_server import free_port
from devtools.smtp_sink import SmtpSink

SINK = SmtpSink(port=int(os.environ.get("TEST_SMTP_PORT") or free_port())).start()
atexit.register(SINK.stop)

# What the workers read when the fleet starts (this process reads its settings earlier:
# in-process tests override EMAIL_PORT with the `settings` fixture).
os.environ["DJANGO_EMAIL_BACKEND"] = "django.core.mail.backends.smtp.EmailBackend"
os.environ["EMAIL_HOST"] = "127.0.0.1"
os.environ["EMAIL_PORT"] = str(SINK.port)
for name, value in {
    # Retries within seconds, with room for a test to restart the sink in between.
    "EMAIL_RETRY_BACKOFF": "0.2",
    "EMAIL_RETRY_BACKOFF_MAX": "1",
    "EMAIL_MAX_RETRIES": "8",
    "EMAIL_TIMEOUT": "5",
    # Several batches and slices even for a campaign of a dozen customers.
    "EMAIL_BULK_BATCH_SIZE": "5",
    "EMAIL_BULK_SLICE": "2",
}.items():
    os.environ.setdefault(name, value)


def sink_running() -> SmtpSink:
    if not SINK.running:
        SINK.start()
    return SINK


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """The session's sink, listening, with nothing received and nobody refused."""
    sink = sink_running()
    sink.clear()
    sink.refuse, sink.hold, sink.hold_quit = None, 0.0, 0.0
    yield sink
    sink.refuse, sink.hold, sink.hold_quit = None, 0.0, 0.0
    sink_running()  # a test that stopped it (an outage) leaves it listening again
