"""The app's half of the status screen: queue depth and the oldest message's age from the broker
itself (a real Redis and a local SQS, moto_server), and the command that renders the screen's
QUEUES and APP sections and decides their problems (those tests need neither a database nor a
broker: they give the command a status of their own)."""

import argparse
import datetime
import json
import re
import time

import pytest
from django.core.management import CommandError, call_command

from config.celery_app import app as celery_app
from core import queues
from core.management.commands import status as status_command
from core.queues import queue_stats


def test_redis_queue_depth_and_the_oldest_messages_age(redis_broker):
    with celery_app.connection_for_write(redis_broker) as connection:
        celery_app.send_task("probe.first", queue="bulk", connection=connection)
        time.sleep(1.2)
        celery_app.send_task("probe.second", queue="bulk", connection=connection)
    stats = {row["queue"]: row for row in queue_stats()}
    assert stats["bulk"]["waiting"] == 2
    assert stats["interactive"]["waiting"] == 0
    assert stats["interactive"]["oldest_age_s"] is None
    # The oldest message is the first one sent, not the newest.
    assert 1.2 <= stats["bulk"]["oldest_age_s"] < 30
    assert stats["interactive"]["reserved_all_queues"] == 0


def test_sqs_queue_depth_in_flight_delayed_and_dead_letters(sqs_filled):
    stats = {row["queue"]: row for row in queue_stats()}
    assert (stats["bulk"]["waiting"], stats["bulk"]["in_flight"], stats["bulk"]["delayed"]) == (
        2,
        1,
        1,
    )
    assert stats["interactive"]["dead"] == 1
    assert stats["bulk"]["dead"] == 0
    # moto has no CloudWatch data points for SQS: the age is unknown, not made up.
    assert stats["bulk"]["oldest_age_s"] is None


def test_cloudwatch_is_asked_once_a_minute_per_queue(monkeypatch):
    """The exporter's scrapes every 15 s reuse the last minute's answer; a new minute asks
    again."""
    asked = []

    class CloudWatch:
        def get_metric_statistics(self, **request):
            asked.append(request["Dimensions"][0]["Value"])
            now = datetime.datetime.now(datetime.UTC)
            return {"Datapoints": [{"Timestamp": now, "Maximum": 42.0 + len(asked)}]}

    monkeypatch.setattr(queues, "_sqs_client", lambda service: CloudWatch())
    monkeypatch.setattr(queues, "_oldest_age_asked", {})
    start = 1_000_000.0
    ages = [queues._sqs_oldest_age("q-bulk", start + offset) for offset in (0, 15, 30, 45)]
    assert ages == [43.0] * 4
    assert asked == ["q-bulk"]
    assert queues._sqs_oldest_age("q-interactive", start + 15) == 44.0
    assert queues._sqs_oldest_age("q-bulk", start + 60) == 45.0
    assert asked == ["q-bulk", "q-interactive", "q-bulk"]


@pytest.mark.django_db
def test_the_status_command_names_campaigns_rate_limits_and_kill_switches(
    redis_broker, held_back, capsys
):
    from core.models import BulkPause

    # The database host's guard pauses every host; a row it cleared pauses nothing.
    BulkPause.objects.create(source="db-1", paused=True, reason="burst balance 12%")
    BulkPause.objects.create(source="db-0", paused=False, reason="")
    call_command("status", "--json", "--sla", "bulk=3600")
    status = json.loads(capsys.readouterr().out)
    assert status["campaigns_running"] == 1
    assert status["people_rate_limited"] == 1
    assert status["kill_switches"] == [{"task": "blocking.act_on_batch", "reason": "rollback"}]
    assert [pause["source"] for pause in status["bulk_paused"]] == ["db-1"]
    assert status["problems"] == [
        "kill switch engaged: blocking.act_on_batch",
        "bulk work paused through the database by db-1 (core_bulkpause): burst balance 12%",
    ]

    call_command("status")
    text = capsys.readouterr().out
    assert text == status["text"] + "\n"
    assert "  kill switches engaged: blocking.act_on_batch (rollback)" in text
    assert "  campaigns running 1, people waiting on a rate limit 1" in text
    assert re.search(r"^  bulk +0 ", text, re.MULTILINE)


# The command's decisions and rendering, on a status of the tests' own: no database, no broker.


def queue(name, waiting=0, in_flight=None, delayed=None, dead=None, oldest_age_s=None, **extra):
    return {
        "queue": name,
        "waiting": waiting,
        "in_flight": in_flight,
        "delayed": delayed,
        "dead": dead,
        "oldest_age_s": oldest_age_s,
        **extra,
    }


REDIS_STATUS = {
    "queues": [
        queue("interactive", 0, reserved_all_queues=3),
        queue("bulk", 1204, oldest_age_s=4000.4),
        queue("maintenance", 2, oldest_age_s=61.2),
    ],
    "campaigns_running": 2,
    "people_rate_limited": 1,
    "kill_switches": [
        {"task": "blocking.act_on_batch", "reason": "rollback"},
        {"task": "blocking.fetch_follower_page", "reason": ""},
    ],
    "bulk_paused": [
        {"source": "db-1", "reason": "burst balance 12%", "since": "2026-12-06T04:00:00.5+00:00"}
    ],
}
SQS_STATUS = {
    "queues": [
        queue("interactive", 0, 0, 0, 2, None),
        queue("bulk", 12, 3, 1, 0, 30.0),
        queue("maintenance", 0, 0, 0, 0, None),
    ],
    "campaigns_running": 0,
    "people_rate_limited": 0,
    "kill_switches": [],
    "bulk_paused": [],
}
SLAS = {"interactive": 60.0, "maintenance": 300.0, "bulk": 3600.0}


@pytest.mark.parametrize(
    ("age", "sla", "exceeded"),
    [
        (3600.1, 3600.0, True),
        (3600.0, 3600.0, False),
        (0.0, 60.0, False),
        (None, 60.0, False),
        (99999.0, None, False),
    ],
    ids=["older", "exactly-the-sla", "fresh", "age-unknown", "no-sla"],
)
def test_a_queue_is_over_its_sla_only_when_its_oldest_message_waited_longer(age, sla, exceeded):
    assert status_command.sla_exceeded(age, sla) is exceeded


def test_a_queue_over_its_sla_is_a_problem_that_names_both_numbers():
    assert status_command.queue_problems(queue("bulk", 5, oldest_age_s=4000.4), 3600.0) == [
        "queue bulk: oldest message 4000s old, SLA 3600s"
    ]
    assert status_command.queue_problems(queue("bulk", 5, oldest_age_s=3599.0), 3600.0) == []
    assert status_command.queue_problems(queue("bulk", 5, oldest_age_s=4000.4), None) == []


@pytest.mark.parametrize(("dead", "problems"), [(2, 1), (0, 0), (None, 0)])
def test_messages_in_a_dead_letter_queue_are_a_problem(dead, problems):
    found = status_command.queue_problems(queue("interactive", dead=dead), 60.0)
    assert found == ["queue interactive: 2 messages in its dead-letter queue"][:problems]


def test_every_engaged_kill_switch_is_a_problem():
    assert status_command.kill_switch_problems(REDIS_STATUS["kill_switches"]) == [
        "kill switch engaged: blocking.act_on_batch",
        "kill switch engaged: blocking.fetch_follower_page",
    ]
    assert status_command.kill_switch_problems([]) == []


def test_the_problems_of_a_status_in_screen_order():
    assert status_command.app_problems(REDIS_STATUS, SLAS) == [
        "queue bulk: oldest message 4000s old, SLA 3600s",
        "kill switch engaged: blocking.act_on_batch",
        "kill switch engaged: blocking.fetch_follower_page",
        "bulk work paused through the database by db-1 (core_bulkpause): burst balance 12%",
    ]
    assert status_command.app_problems(SQS_STATUS, SLAS) == [
        "queue interactive: 2 messages in its dead-letter queue"
    ]
    # Without SLAs only the dead letters and the kill switches are problems.
    assert status_command.app_problems(REDIS_STATUS, {}) == [
        "kill switch engaged: blocking.act_on_batch",
        "kill switch engaged: blocking.fetch_follower_page",
        "bulk work paused through the database by db-1 (core_bulkpause): burst balance 12%",
    ]


def test_the_screen_sections_on_redis():
    assert status_command.format_status(REDIS_STATUS).splitlines() == [
        "QUEUES        waiting  in flight  delayed  dead  oldest",
        "  interactive       0          -        -     -  unknown",
        "  bulk           1204          -        -     -  67m",
        "  maintenance       2          -        -     -  61s",
        "  held by workers (unacked, countdown/ETA tasks included): 3",
        "APP",
        "  campaigns running 2, people waiting on a rate limit 1",
        "  kill switches engaged: blocking.act_on_batch (rollback),"
        " blocking.fetch_follower_page (no reason given)",
        "  bulk work paused through the database (core_bulkpause):"
        " db-1 since 2026-12-06T04:00:00 (burst balance 12%)",
    ]


def test_the_screen_sections_on_sqs():
    assert status_command.format_status(SQS_STATUS).splitlines() == [
        "QUEUES        waiting  in flight  delayed  dead  oldest",
        "  interactive       0          0        0     2  unknown",
        "  bulk             12          3        1     0  30s",
        "  maintenance       0          0        0     0  unknown",
        "APP",
        "  campaigns running 0, people waiting on a rate limit 0",
        "  kill switches engaged: none",
        "  bulk work paused through the database (core_bulkpause): no",
    ]


@pytest.mark.parametrize("status", [REDIS_STATUS, SQS_STATUS], ids=["redis", "sqs"])
def test_the_screen_says_what_the_host_tests_and_the_runbook_read(status):
    """molecule/default/tests/test_status.py and test_runbook.py read these lines on the host."""
    text = status_command.format_status(status)
    for name in ["interactive", "bulk", "maintenance"]:
        assert re.search(rf"^  {name} +\d+ ", text, re.MULTILINE), name
    assert re.search(r"^QUEUES +waiting", text, re.MULTILINE)
    assert "campaigns running " in text
    assert "kill switches engaged: " in text


@pytest.mark.parametrize(
    ("text", "sla"),
    [("bulk=3600", ("bulk", 3600.0)), ("interactive=0.5", ("interactive", 0.5))],
)
def test_an_sla_is_a_queue_and_a_positive_number_of_seconds(text, sla):
    assert status_command.parse_sla(text) == sla


@pytest.mark.parametrize("text", ["bulk", "bulk=", "bulk=soon", "bulk=0", "bulk=-5", "=60"])
def test_an_sla_that_is_not_one_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="QUEUE=SECONDS"):
        status_command.parse_sla(text)


@pytest.fixture
def redis_status(monkeypatch):
    monkeypatch.setattr(status_command, "app_status", lambda: REDIS_STATUS)
    return REDIS_STATUS


def test_the_command_prints_the_screen_sections(redis_status, capsys):
    call_command("status")
    assert capsys.readouterr().out == status_command.format_status(redis_status) + "\n"


def test_the_json_has_the_numbers_the_problems_under_the_slas_given_and_the_text(
    redis_status, capsys
):
    call_command("status", "--json", "--sla", "bulk=3600", "--sla", "maintenance=60")
    out = capsys.readouterr().out
    assert out.startswith('{"queues": [')
    status = json.loads(out)
    assert {key: status[key] for key in redis_status} == redis_status
    assert status["problems"] == [
        "queue bulk: oldest message 4000s old, SLA 3600s",
        "queue maintenance: oldest message 61s old, SLA 60s",
        "kill switch engaged: blocking.act_on_batch",
        "kill switch engaged: blocking.fetch_follower_page",
        "bulk work paused through the database by db-1 (core_bulkpause): burst balance 12%",
    ]
    assert status["text"] == status_command.format_status(redis_status)


def test_the_command_refuses_an_sla_that_is_not_one(redis_status):
    with pytest.raises(CommandError, match="QUEUE=SECONDS"):
        call_command("status", "--json", "--sla", "bulk")
