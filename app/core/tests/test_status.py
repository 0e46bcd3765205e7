"""The app's half of the status screen, against a real Redis and a local SQS (moto_server):
queue depth and the oldest message's age come from the broker itself."""

import json
import time

import pytest
from django.core.management import call_command

from config.celery_app import app as celery_app
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


@pytest.mark.django_db
def test_the_status_command_names_campaigns_rate_limits_and_kill_switches(
    redis_broker, held_back, capsys
):
    call_command("status", "--json")
    status = json.loads(capsys.readouterr().out)
    assert status["campaigns_running"] == 1
    assert status["people_rate_limited"] == 1
    assert status["kill_switches"] == [{"task": "blocking.act_on_batch", "reason": "rollback"}]

    call_command("status")
    text = capsys.readouterr().out
    assert "kill switches engaged: blocking.act_on_batch (rollback)" in text
    assert "campaigns running: 1   people waiting on a rate limit: 1" in text
    assert "bulk" in text
