"""A local SMTP server that accepts mail and keeps it: the stand-in for the email provider.

Built on aiosmtpd (the SMTP protocol is the library's, not ours). `manage.py smtp_sink`
serves it in the foreground for `make run`, storing each message as an .eml file and
listing what it received; tests and the benchmark start it in their own process on a free
port (`SmtpSink(...).start()`) and read `received`. `refuse` scripts permanent or transient
refusals per recipient (`550 5.1.1 no such user`), as a real provider answers; `hold`
makes it as slow as a loaded one (seconds before each message is accepted), `hold_quit`
slow to say goodbye once it has a message, and `peak_in_flight` tells how many messages it
was handed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from devtools.redis_server import free_port

# aiosmtpd logs every SMTP command at INFO: five lines per message, 100,000 in a campaign.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Received:
    """One message as the server accepted it."""

    mail_from: str
    recipients: list[str]
    data: bytes
    received_at: float = field(default_factory=time.time)

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    @property
    def body(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content() if part is not None else ""

    def summary(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.received_at))
        return f"{when}  {self.mail_from} -> {', '.join(self.recipients)}  {self.subject}"


Refuse = Callable[[str], str | None]


def refuse_matching(pattern: str, reply: str = "550 5.1.1 Recipient refused") -> Refuse:
    """A `refuse` hook: recipients matching the regular expression get `reply`."""
    compiled = re.compile(pattern)
    return lambda address: reply if compiled.search(address) else None


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        refusal = self.sink.refuse(address) if self.sink.refuse else None
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.sink._in_flight():
            if self.sink.hold:
                await asyncio.sleep(self.sink.hold)
            return self._accept(envelope)

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.hold_quit:
            await asyncio.sleep(self.sink.hold_quit)
        return "221 Bye"

    def _accept(self, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        number = self.sink._keep(Received(envelope.mail_from, list(envelope.rcpt_tos), data))
        return f"250 OK: queued as {number}"


class SmtpSink:
    """`with SmtpSink() as sink:` accepts mail on sink.port until the block ends."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        store_dir: Path | None = None,
        refuse: Refuse | None = None,
        echo: Callable[[Received], Any] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port()
        self.store_dir = store_dir
        self.refuse = refuse
        self.echo = echo
        self.received: list[Received] = []
        self.hold = 0.0
        self.hold_quit = 0.0
        self.peak_in_flight = 0
        self._in_flight_now = 0
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        if store_dir is not None:
            store_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> SmtpSink:
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused until start() (a provider outage)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _keep(self, message: Received) -> int:
        with self._lock:
            self.received.append(message)
            number = len(self.received)
        if self.store_dir is not None:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(message.received_at))
            (self.store_dir / f"{stamp}-{number:06d}.eml").write_bytes(message.data)
        if self.echo is not None:
            self.echo(message)
        return number

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight_now += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight_now)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight_now -= 1

    def clear(self) -> None:
        """Forget what was received, and the peak."""
        with self._lock:
            self.received.clear()
            self.peak_in_flight = self._in_flight_now

    def messages(self, to: str | None = None) -> list[Received]:
        with self._lock:
            return [m for m in self.received if to is None or to in m.recipients]


def stored(store_dir: Path) -> list[Received]:
    """The messages a sink stored in `store_dir`, oldest first (`smtp_sink --list`)."""
    found = []
    for path in sorted(store_dir.glob("*.eml")):
        data = path.read_bytes()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        found.append(
            Received(
                mail_from=str(parsed["From"] or ""),
                recipients=[str(parsed["To"] or "")],
                data=data,
                received_at=path.stat().st_mtime,
            )
        )
    return found
