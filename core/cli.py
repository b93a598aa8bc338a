"""What every run-starting management command shares: waiting, progress and exit codes.

Exit codes (the same for every command that starts a run, so cron wrappers can rely on
them): 0 all done, 1 some items failed, 2 the status callback failed, 3 cancelled,
4 could not publish (the broker is down; the reconciler starts the run later),
5 still running when --timeout ran out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from django.db import InterfaceError, OperationalError, connection

from core import runs

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_CALLBACK_FAILED = 2
EXIT_CANCELLED = 3
EXIT_NOT_PUBLISHED = 4
EXIT_TIMEOUT = 5

NOT_PUBLISHED = (
    "The task broker is not reachable: run #{pk} is saved and will start when it is "
    "(the reconciler, `manage.py reconcile_runs`, publishes it)."
)


def run_exit_code(run: runs.Run) -> int:
    """Cancelled, then items failed, then all good (a workflow may check more first)."""
    if run.status == runs.RunStatus.CANCELLED:
        return EXIT_CANCELLED
    if run.status in (runs.RunStatus.FAILED, runs.RunStatus.COMPLETED_WITH_ERRORS):
        return EXIT_ITEMS_FAILED
    return EXIT_OK


class Progress:
    """Progress for a person at a terminal (one redrawn line) or for cron mail (few lines)."""

    WIDTH = 30
    PLAIN_EVERY = 30.0  # seconds between plain lines, besides start and end

    def __init__(self, out: TextIO, *, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._last_line = ""
        self._last_plain = 0.0
        self._drawn = False

    def show(self, run: runs.Run) -> None:
        status = run.get_status_display().lower()
        if not run.total and not run.is_finished:
            # Nothing counted yet (a campaign counts its recipients first): no "0/0 done".
            line = f"{status}, counting the work"
        else:
            failed = f", {run.failed:,} failed" if run.failed else ""
            line = f"{run.done:,}/{run.total:,} done{failed}; {status}"
        if self.tty:
            filled = int(self.WIDTH * run.done / max(run.total, 1))
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.out.write(f"\r[{bar}] {line}   ")
            self.out.flush()
            self._drawn = True
            return
        now = time.monotonic()
        if line != self._last_line and (now - self._last_plain >= self.PLAIN_EVERY):
            self.out.write(f"Progress: {line}\n")
            self.out.flush()
            self._last_plain = now
        self._last_line = line

    def note(self, text: str) -> None:
        """A line of its own, below the redrawn progress line if there is one."""
        if self._drawn:
            self.out.write("\n")
            self._drawn = False
        self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        if self._drawn:
            self.out.write("\n")
            self.out.flush()


def wait_settled(
    run: runs.Run,
    *,
    out: TextIO,
    timeout: float | None,
    interval: float = 0.5,
    on_tick: Callable[[runs.Run], Any] | None = None,
) -> bool:
    """Poll `run` until it has settled (callback included); False when `timeout` ran out.

    The database dropping the connection (a failover, a restart) does not end the wait:
    the run goes on without us, so the next poll opens a new connection, and the person
    or cron mail learns of the outage in one line instead of a traceback.
    """
    progress = Progress(out)
    deadline = time.monotonic() + timeout if timeout else None
    outage = False
    try:
        while True:
            try:
                run.refresh_from_db()
                progress.show(run)
                if on_tick:
                    on_tick(run)
            except (OperationalError, InterfaceError) as exc:
                connection.close()  # a broken connection is discarded, not reused
                if not outage:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    progress.note(f"Lost the database connection ({reason}); still waiting.")
                outage = True
            else:
                if outage:
                    progress.note("Database connection back.")
                outage = False
                if run.is_settled:
                    return True
            if deadline and time.monotonic() > deadline:
                return False
            time.sleep(interval)
    finally:
        progress.end()


def wait_or_exit(
    run: runs.Run, *, out: TextIO, err: TextIO, timeout: float | None, label: str = "Run"
) -> None:
    """`wait_settled`, and on timeout say so and exit EXIT_TIMEOUT (the run keeps going)."""
    if not wait_settled(run, out=out, timeout=timeout):
        err.write(
            f"{label} {run.pk} is still {run.get_status_display().lower()} after "
            f"{timeout or 0:.0f} s (it keeps going; see its admin page).\n"
        )
        sys.exit(EXIT_TIMEOUT)
