"""The suite's own Celery worker must not outlive its test: beat's queries once deadlocked
the TRUNCATE that resets the database after a transactional test, and the rows it left
failed the next test (issue 24)."""

import os

import pytest
from conftest import Worker, wait_until, worker_sessions

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A periodic task beat sends every second, run by the pool on the database.
RAN_ON_THE_DATABASE = b"blocking.release_due_pages["


def ran_a_periodic_task(worker):
    log = worker.log_path.read_bytes()
    return any(RAN_ON_THE_DATABASE in line and b"succeeded" in line for line in log.splitlines())


def test_a_stopped_test_worker_leaves_no_process_and_no_database_session(worker_env, tmp_path):
    worker = Worker(worker_env, tmp_path / "worker.log")
    try:
        worker.start()
        # Its sessions last a task each (a few ms), too short to poll for: its log says it
        # has been on the database.
        wait_until(lambda: ran_a_periodic_task(worker), 120, message="a periodic task to run")
        groups = [worker.process.pid, worker.beat.pid]
        assert worker.children()
    finally:
        worker.stop()
    assert worker_sessions(worker_env) == []
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
