"""Dead letters for operators: list them, replay them, discard them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core import deadletters
from core.models import DeadLetter


class Command(BaseCommand):
    help = (
        "list [--all] [--queue Q] [--task NAME]: open dead letters (tasks that gave up); "
        "replay ID [ID ...]: publish each again to its queue; discard ID [ID ...]: close "
        "them without running. Unknown or already closed IDs change nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="List dead letters (open ones by default).")
        listing.add_argument("--all", action="store_true", help="Replayed and discarded too.")
        listing.add_argument("--queue")
        listing.add_argument("--task")
        for name in ("replay", "discard"):
            action = sub.add_parser(name)
            action.add_argument("ids", nargs="+", type=int, metavar="ID")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "list":
            self.list(options)
            return
        ids = options["ids"]
        letters = {d.pk: d for d in DeadLetter.objects.filter(pk__in=ids)}
        unknown = [str(i) for i in ids if i not in letters]
        if unknown:
            raise CommandError(f"No dead letter with id {', '.join(unknown)}. Nothing done.")
        closed = [f"#{d.pk}" for d in letters.values() if not d.is_open]
        if closed:
            raise CommandError(f"Already replayed or discarded: {', '.join(closed)}. Nothing done.")
        for pk in ids:
            if action == "replay":
                letter = deadletters.deadletter_replay(dead_letter_id=pk)
                self.stdout.write(
                    f"#{pk} {letter.task_name}: published again to {letter.queue} "
                    f"as task {letter.replay_task_id}"
                )
            else:
                deadletters.deadletter_discard(dead_letter_id=pk)
                self.stdout.write(f"#{pk}: discarded")

    def list(self, options: dict[str, Any]) -> None:
        letters = DeadLetter.objects.all()
        if not options["all"]:
            letters = letters.filter(replayed_at__isnull=True, discarded_at__isnull=True)
        if options["queue"]:
            letters = letters.filter(queue=options["queue"])
        if options["task"]:
            letters = letters.filter(task_name=options["task"])
        count = 0
        for d in letters.order_by("-last_failed_at")[:500]:
            count += 1
            when = timezone.localtime(d.last_failed_at)
            self.stdout.write(
                f"#{d.pk}  {when:%Y-%m-%d %H:%M:%S}  {d.queue:<22} {d.task_name}  "
                f"{d.get_reason_display()}, {d.attempts} attempts: "
                f"{d.exception_type}: {d.message[:120]}"
            )
        if not count:
            self.stdout.write("No dead letters." if options["all"] else "No open dead letters.")
