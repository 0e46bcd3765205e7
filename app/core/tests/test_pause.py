"""The guard's pause flag, as a real Celery worker sees it: with the flag present the worker
stops consuming its pausable queue (bulk) and still serves interactive; without it, it consumes
bulk again. Works the same on SQS: nothing here uses Celery's remote control."""

import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from conftest import wait_until

from config.celery_app import app as celery_app

APP_DIR = Path(__file__).resolve().parents[2]


def test_a_worker_pauses_bulk_while_the_flag_exists_and_resumes_after(redis_url, tmp_path):
    url = redis_url.rsplit("/", 1)[0] + "/8"
    broker = redis.Redis.from_url(url)
    broker.flushdb()
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
    try:
        wait_until(lambda: b"ready." in log_path.read_bytes(), 60, message="the worker to start")
        wait_until(
            lambda: b"paused: stopped consuming from bulk" in log_path.read_bytes(),
            10,
            message="the worker to pause bulk",
        )
        with celery_app.connection_for_write(url) as connection:
            celery_app.send_task("probe.bulk", queue="bulk", connection=connection)
            celery_app.send_task("probe.interactive", queue="interactive", connection=connection)
        wait_until(lambda: broker.llen("interactive") == 0, 20, message="interactive to be served")
        time.sleep(2)
        assert broker.llen("bulk") == 1, "bulk was consumed while paused"

        flag.unlink()
        wait_until(
            lambda: broker.llen("bulk") == 0, 20, message="bulk to be consumed after the resume"
        )
        assert b"resumed: consuming from bulk again" in log_path.read_bytes()
    finally:
        worker.terminate()
        worker.wait(30)
