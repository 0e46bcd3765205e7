"""The task rules from LESSONS.md, checked against the configured Celery app."""

from django.conf import settings

import blocking.tasks  # noqa: F401  (registers the tasks, as a worker's autodiscovery does)
from config.celery_app import app

BLOCKING_TASKS = sorted(name for name in app.tasks if name.startswith("blocking."))


def test_every_task_is_named_routed_and_time_limited():
    assert BLOCKING_TASKS == [
        "blocking.act_on_batch",
        "blocking.fetch_follower_page",
        "blocking.release_batches",
        "blocking.release_due_pages",
        "blocking.release_expired",
        "blocking.requeue_stranded",
        "blocking.revoke_grant",
        "blocking.start_campaign",
        "blocking.undo_batch",
    ]
    for name in BLOCKING_TASKS:
        task = app.tasks[name]
        assert task.time_limit, name
        assert task.soft_time_limit < task.time_limit, name
        assert settings.CELERY_TASK_ROUTES[name]["queue"] in {"interactive", "bulk", "maintenance"}


def test_queues_are_planned_by_latency():
    routes = {name: settings.CELERY_TASK_ROUTES[name]["queue"] for name in BLOCKING_TASKS}
    assert routes["blocking.start_campaign"] == "interactive"
    assert routes["blocking.act_on_batch"] == "bulk"
    assert routes["blocking.fetch_follower_page"] == "bulk"
    assert routes["blocking.release_expired"] == "maintenance"
    # The maintenance pool has no credentials key: a network pool revokes an unlinked grant.
    assert routes["blocking.revoke_grant"] == "interactive"


def test_work_that_must_survive_a_crash_is_acknowledged_late():
    for name in ["blocking.act_on_batch", "blocking.fetch_follower_page", "blocking.undo_batch"]:
        task = app.tasks[name]
        assert task.acks_late, name
        assert task.reject_on_worker_lost, name


def test_only_json_crosses_the_broker():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]


def test_no_countdown_outlives_the_visibility_timeout():
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility > settings.MAX_COUNTDOWN_S + settings.CELERY_TASK_TIME_LIMIT
    assert settings.MAX_COUNTDOWN_S <= 10
    assert settings.INFRA_RETRY_S <= settings.MAX_COUNTDOWN_S
