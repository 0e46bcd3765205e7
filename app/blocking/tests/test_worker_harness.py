"""The suite's own Celery worker must not outlive its test: beat's queries once deadlocked
the TRUNCATE that resets the database after a transactional test, and the rows it left
failed the next test (issue 24)."""

import os

import pytest
from conftest import Worker, wait_until, worker_sessions

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_stopped_test_worker_leaves_no_process_and_no_database_session(worker_env, tmp_path):
    worker = Worker(worker_env, tmp_path / "worker.log")
    try:
        worker.start()
        # Beat sends the periodic tasks every second and the pool runs them on the database.
        wait_until(lambda: worker_sessions(worker_env), 30, message="the worker's sessions")
        groups = [worker.process.pid, worker.beat.pid]
        assert worker.children()
    finally:
        worker.stop()
    assert worker_sessions(worker_env) == []
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)
