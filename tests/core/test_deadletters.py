"""Nothing silently dropped: tasks that give up become dead letters a person can replay."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.models import DeadLetter, TaskDelivery
from core.waiting import wait_for
from tests.support.admin import csrf_client
from tests.support.admin import post_action as admin_post_action
from tests.support.factories import make_staff
from tests.support.settings_env import manage

pytestmark = pytest.mark.workers
LETTERS = reverse("admin:core_deadletter_changelist")
FLAKY = "devtools.tasks.fail_while_exists"


def post_action(client, action: str, letters: list[DeadLetter]):
    return admin_post_action(client, LETTERS, action, letters)


def exhausted_letter(app, tmp_path) -> tuple[DeadLetter, list[str]]:
    """A task whose dependency stays down through every retry (TASK_DB_MAX_RETRIES: 3)."""
    marker, done = tmp_path / "dependency-down", tmp_path / "done"
    marker.touch()
    args = [str(marker), str(done)]
    app.send_task(FLAKY, args=args)
    letter = wait_for(lambda: DeadLetter.objects.filter(task_name=FLAKY).first(), timeout=60)
    return letter, args


def test_a_task_that_exhausts_its_retries_is_replayed_from_the_admin(app, workers, tmp_path):
    letter, args = exhausted_letter(app, tmp_path)

    assert letter.reason == DeadLetter.Reason.RETRIES_EXHAUSTED
    assert (letter.queue, letter.args, letter.attempts) == ("default", args, 4)
    assert letter.exception_type == "OperationalError"
    assert "the dependency is down" in letter.message and "Traceback" in letter.traceback
    operator = make_staff("operator", "view_deadletter", "replay_deadletter")
    client = csrf_client(operator)
    assert "default: 1" in client.get(LETTERS).text  # open dead letters per queue
    assert "Dead letters" in client.get(reverse("admin:index")).text

    (tmp_path / "dependency-down").unlink()  # the cause is gone
    page = post_action(client, "replay", [letter])

    assert f"Replayed #{letter.pk}." in page.text
    wait_for(lambda: (tmp_path / "done").exists(), what="the replayed task to succeed")
    letter.refresh_from_db()
    assert letter.replayed_by == operator and letter.replay_task_id
    assert not letter.is_open
    again = post_action(client, "replay", [letter])
    assert "was already replayed" in again.text


def test_replay_and_discard_need_their_permissions(app, workers, tmp_path):
    letter, _ = exhausted_letter(app, tmp_path)
    viewer = make_staff("viewer", "view_deadletter")
    client = csrf_client(viewer)

    assert "Replay the selected" not in client.get(LETTERS).text
    post_action(client, "replay", [letter])
    post_action(client, "discard", [letter])

    letter.refresh_from_db()
    assert letter.is_open


def test_the_deadletters_command_lists_replays_and_discards(app, workers, tmp_path):
    letter, _ = exhausted_letter(app, tmp_path)

    listing = manage("deadletters", "list", env=workers.env)
    bad = manage("deadletters", "replay", str(letter.pk), "999999", env=workers.env)
    discard = manage("deadletters", "discard", str(letter.pk), env=workers.env)
    again = manage("deadletters", "replay", str(letter.pk), env=workers.env)

    assert f"#{letter.pk}" in listing.stdout and FLAKY in listing.stdout
    assert "Retries exhausted, 4 attempts: OperationalError" in listing.stdout
    assert bad.returncode != 0 and "No dead letter with id 999999. Nothing done." in bad.stderr
    assert discard.returncode == 0 and f"#{letter.pk}: discarded" in discard.stdout
    assert again.returncode != 0 and "Already replayed or discarded" in again.stderr
    letter.refresh_from_db()
    assert letter.discarded_at and not letter.replayed_at
    assert "No open dead letters." in manage("deadletters", "list", env=workers.env).stdout


def test_a_task_that_kills_its_process_is_dead_lettered_and_the_node_serves_on(
    app, workers, tmp_path
):
    """A prefork child dies (os._exit): requeued, redelivered, stopped after the limit."""
    crash = app.send_task("devtools.tasks.crash_process", queue="reports.inventory")

    letter = wait_for(lambda: DeadLetter.objects.filter(task_id=crash.id).first(), timeout=90)

    assert letter.reason == DeadLetter.Reason.DELIVERY_LIMIT
    assert letter.attempts == 4 and letter.queue == "reports.inventory"
    assert "delivered 4 times without finishing (limit 3)" in letter.message
    assert TaskDelivery.objects.get(task_id=crash.id).deliveries == 4
    served = tmp_path / "served"
    app.send_task("devtools.tasks.touch", args=[str(served)], queue="reports.inventory")
    wait_for(served.exists, what="the node to serve the next task")
    assert workers.procs["reports_inventory"].poll() is None
