"""The guard's pause, as a worker sees it: while the local flag exists or any guard's row in
core_bulkpause says paused, the worker stops consuming its pausable queue (bulk) and still serves
interactive; when neither does, it consumes bulk again. Works the same on SQS: nothing here uses
Celery's remote control. A real Celery worker first, then the bootstep driven by hand against the
test database, to see what it does when the database goes away."""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from blocking.tests.test_web import admin_signed_in
from conftest import free_port, wait_until
from django.db import connection

from config.celery_app import app as celery_app
from core.pause import PauseWhenFlagged

APP_DIR = Path(__file__).resolve().parents[2]

# What shoestring-guard runs over psql on the database host (roles/guard): the columns and the
# conflict target must stay as they are.
GUARD_SQL = (
    "INSERT INTO core_bulkpause (source, paused, reason, changed_at) VALUES (%s, %s, %s, now())"
    " ON CONFLICT (source) DO UPDATE SET paused = EXCLUDED.paused, reason = EXCLUDED.reason,"
    " changed_at = EXCLUDED.changed_at"
)


def guard_writes(source, paused, reason=""):
    """As the guard does: one short session of its own."""
    with connection.cursor() as cursor:
        cursor.execute(GUARD_SQL, [source, paused, reason])
    connection.close()


def start_worker(env, log_path):
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "interactive,bulk",
                "--pool",
                "solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=APP_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: b"ready." in log_path.read_bytes(), 60, message="the worker to start")
    return worker


def bulk_waits_while_interactive_is_served(url, broker):
    with celery_app.connection_for_write(url) as broker_connection:
        celery_app.send_task("probe.bulk", queue="bulk", connection=broker_connection)
        celery_app.send_task("probe.interactive", queue="interactive", connection=broker_connection)
    wait_until(lambda: broker.llen("interactive") == 0, 20, message="interactive to be served")
    time.sleep(2)
    assert broker.llen("bulk") == 1, "bulk was consumed while paused"


def paused_then_resumed(env, log_path, paused_broker, lift, said=None):
    """A worker started paused keeps bulk waiting while interactive is served, and consumes
    bulk once lift() has ended the pause."""
    url, broker = paused_broker
    worker = start_worker(env, log_path)
    try:
        wait_until(
            lambda: b"paused: stopped consuming from bulk" in log_path.read_bytes(),
            10,
            message="the worker to pause bulk",
        )
        if said:
            assert said in log_path.read_bytes()
        bulk_waits_while_interactive_is_served(url, broker)

        lift()
        wait_until(
            lambda: broker.llen("bulk") == 0, 20, message="bulk to be consumed after the resume"
        )
        assert b"resumed: consuming from bulk again" in log_path.read_bytes()
    finally:
        worker.terminate()
        worker.wait(30)


@pytest.fixture
def paused_broker(redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/8"
    broker = redis.Redis.from_url(url)
    broker.flushdb()
    return url, broker


def test_a_worker_pauses_bulk_while_the_flag_exists_and_resumes_after(paused_broker, tmp_path):
    url = paused_broker[0]
    flag = tmp_path / "pause-bulk"
    flag.touch()
    log_path = tmp_path / "worker.log"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        CELERY_BROKER_URL=url,
        SHOESTRING_GUARD_PAUSE_FLAG=str(flag),
        SHOESTRING_GUARD_POLL_S="0.5",
    )
    paused_then_resumed(env, log_path, paused_broker, flag.unlink)


def test_a_worker_pauses_bulk_while_the_database_host_s_guard_says_so(
    transactional_db, worker_env, paused_broker, tmp_path
):
    url = paused_broker[0]
    log_path = tmp_path / "worker.log"
    env = dict(
        worker_env,
        CELERY_BROKER_URL=url,
        SHOESTRING_GUARD_PAUSE_FLAG=str(tmp_path / "no-flag-here"),
        SHOESTRING_GUARD_DB_POLL_S="0.5",
    )
    guard_writes("db-1", True, "burst balance 18%")
    paused_then_resumed(
        env,
        log_path,
        paused_broker,
        lambda: guard_writes("db-1", False, "healthy again"),
        said=b"db-1 paused it (burst balance 18%)",
    )


class Consumer:
    """What the bootstep touches of Celery's consumer: the queues it consumes, and a timer that
    never fires (the tests call the checks themselves)."""

    def __init__(self, *queues):
        self.app = SimpleNamespace(
            amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=dict.fromkeys(queues)))
        )
        self.consuming = set(queues)
        self.timer = SimpleNamespace(
            call_repeatedly=lambda *args: SimpleNamespace(cancel=lambda: None)
        )

    def cancel_task_queue(self, name):
        self.consuming.discard(name)

    def add_task_queue(self, name):
        self.consuming.add(name)


@pytest.fixture
def watched(transactional_db, settings, tmp_path, caplog):
    """A started bootstep on a consumer of interactive and bulk, the flag's path, and the log.
    Transactional: the bootstep closes the connection after each read, as in a worker."""
    flag = tmp_path / "pause-bulk"
    settings.SHOESTRING_GUARD_PAUSE_FLAG = str(flag)
    caplog.set_level(logging.WARNING, logger="shoestring.pause")
    step, consumer = PauseWhenFlagged(None), Consumer("interactive", "bulk")
    step.start(consumer)
    assert consumer.consuming == {"interactive", "bulk"}
    return step, consumer, flag, caplog


def test_a_row_paused_by_another_source_pauses_and_says_who_and_why(watched):
    step, consumer, _, caplog = watched
    guard_writes("db-1", True, "burst balance 18%")
    step.check_database(consumer)
    assert consumer.consuming == {"interactive"}
    assert "db-1 paused it (burst balance 18%)" in caplog.text
    # Nothing open for a prefork child to inherit.
    assert connection.connection is None


def test_the_flag_alone_still_pauses_and_both_must_go_before_it_resumes(watched):
    step, consumer, flag, caplog = watched
    flag.touch()
    step.check_database(consumer)
    assert consumer.consuming == {"interactive"}
    assert f"{flag} exists" in caplog.text

    guard_writes("db-1", True, "memory pressure")
    step.check_database(consumer)
    flag.unlink()
    step.check(consumer)
    assert consumer.consuming == {"interactive"}, "resumed while a row still said paused"
    assert "still paused: bulk (core_bulkpause: db-1 paused it (memory pressure))" in caplog.text

    guard_writes("db-1", False)
    step.check_database(consumer)
    assert consumer.consuming == {"interactive", "bulk"}
    assert "resumed: consuming from bulk again" in caplog.text


def test_an_unreachable_database_keeps_the_last_state_and_says_so_once(watched, monkeypatch):
    step, consumer, _, caplog = watched
    guard_writes("db-1", True, "burst balance 18%")
    step.check_database(consumer)
    guard_writes("db-1", False)  # the guard resumes just as the database goes away
    with monkeypatch.context() as away:
        away.setitem(connection.settings_dict, "PORT", free_port())
        step.check_database(consumer)
        step.check_database(consumer)
        assert consumer.consuming == {"interactive"}, "an outage lifted the pause"
        assert caplog.text.count("cannot read core_bulkpause") == 1
        assert "keeping what it said last: db-1 paused it (burst balance 18%)" in caplog.text
    step.check_database(consumer)
    assert consumer.consuming == {"interactive", "bulk"}
    assert "core_bulkpause can be read again: no source pauses bulk work" in caplog.text

    guard_writes("db-2", True, "written as the database went away")
    with monkeypatch.context() as away:
        away.setitem(connection.settings_dict, "PORT", free_port())
        step.check_database(consumer)
        assert consumer.consuming == {"interactive", "bulk"}, "a row it could not read paused it"


def test_staff_pause_bulk_work_on_every_host_from_the_admin(watched, client, django_user_model):
    step, consumer, _, caplog = watched
    admin_signed_in(client, django_user_model.objects.create_superuser("ops", password="x"))
    response = client.post(
        "/admin/core/bulkpause/add/",
        {"source": "ops by hand", "paused": "on", "reason": "rolling back a release"},
    )
    assert response.status_code == 302, response.content.decode()[:500]
    step.check_database(consumer)
    assert consumer.consuming == {"interactive"}
    assert "ops by hand paused it (rolling back a release)" in caplog.text
