"""Shared fixtures: the fake Bluesky server, a Redis broker and a real Celery worker.

All of them listen on 127.0.0.1 only and stop when the test session ends.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg2
import pytest
from fakesky.server import serve

from tests.polling import wait_until

APP_DIR = Path(__file__).resolve().parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_manage(env, *args):
    """Run manage.py in a fresh process with exactly this environment."""
    return subprocess.run(
        [sys.executable, "-B", "manage.py", *args],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class FakeSky:
    """Talks to the fake server's test-only endpoints (/_fake/) over HTTP, as any client would."""

    def __init__(self, url):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def _post(self, hook, body):
        response = self.http.post(f"/_fake/{hook}", json=body)
        response.raise_for_status()
        return response.json()

    def account(self, handle, password, follows=()):
        return self._post(
            "accounts", {"handle": handle, "password": password, "follows": list(follows)}
        )

    def target(self, handle, followers):
        return self._post("targets", {"handle": handle, "followers": followers})

    def post(self, author, rkey, likes=0, reposts=0, quotes=0, replies=0):
        """A post of a known handle with computed engagement; answers its uri and cid."""
        return self._post(
            "posts",
            {
                "author": author,
                "rkey": rkey,
                "likes": likes,
                "reposts": reposts,
                "quotes": quotes,
                "replies": replies,
            },
        )

    def arrivals(self, subject, kind, per_minute, backdate_every=0):
        """New followers of a target (kind "followers", subject its handle) or likes, reposts,
        quotes or replies of a seeded post (subject its at:// URI) from now on, per_minute a
        minute, every backdate_every-th one backdated to the end of the list; 0 stops them.
        Answers the stream: how many arrived, the handles' pattern."""
        return self._post(
            "arrivals",
            {
                "subject": subject,
                "kind": kind,
                "per_minute": per_minute,
                "backdate_every": backdate_every,
            },
        )

    def revoke(self, handle):
        self._post("revoke", {"handle": handle})

    def set_status(self, handle, status):
        self._post("status", {"handle": handle, "status": status})

    def faults(self, **faults):
        return self._post("faults", faults)

    def oauth(self, **hooks):
        """The authorization server's hooks: authorize_url, granular_scopes,
        expire_access_tokens, nonce_rotate (docs/fakesky.md)."""
        return self._post("oauth", hooks)

    def oauth_state(self):
        response = self.http.get("/_fake/oauth")
        response.raise_for_status()
        return response.json()

    def configure(self, **settings):
        return self._post("config", settings)

    def state(self, handle=None):
        response = self.http.get("/_fake/state", params={"handle": handle} if handle else None)
        response.raise_for_status()
        return response.json()

    def did(self, handle):
        """The DID a handle resolves to, through the real com.atproto.identity.resolveHandle."""
        response = self.http.get(
            "/xrpc/com.atproto.identity.resolveHandle", params={"handle": handle}
        )
        response.raise_for_status()
        return response.json()["did"]


@pytest.fixture(scope="session")
def fakesky_server():
    server, url = serve("127.0.0.1", 0)
    yield server, url
    server.shutdown()


@pytest.fixture
def fakesky(fakesky_server):
    _, url = fakesky_server
    fake = FakeSky(url)
    fake.http.post("/_fake/reset").raise_for_status()
    return fake


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make deps installs it)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: _connects(port), 10, message="redis-server")
    from config.celery_app import app

    app.conf.broker_url = url
    yield url
    process.terminate()
    process.wait(10)


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# What the test workers call themselves to Postgres (PGAPPNAME, which libpq reads).
WORKER_APPLICATION_NAME = "shoestring-test-celery"

# Small numbers so an end-to-end campaign takes seconds, not hours.
WORKER_SETTINGS = {
    "SHOESTRING_FOLLOWER_PAGE_SIZE": "5000",
    "SHOESTRING_FOLLOWER_PAGE_DELAY_S": "1",
    "SHOESTRING_PERIODIC_INTERVAL_S": "1",
    "SHOESTRING_ACTION_LEASE_S": "5",
    "SHOESTRING_STRANDED_AFTER_S": "120",
    "SHOESTRING_RETRY_BASE_S": "1",
    "SHOESTRING_MAX_COUNTDOWN_S": "5",
    "SHOESTRING_KILL_SWITCH_RETRY_S": "1",
    # A stalled call fails after 5 s, so the fault tests need not wait Bluesky's 20.
    "BLUESKY_TIMEOUT_S": "5",
}


class Worker:
    def __init__(self, env, log_path):
        self.env, self.log_path = env, log_path
        self.log = self.process = self.beat = None

    def _spawn(self, *args):
        # Its own process group, so stop() can end the pool children a SIGKILL of the
        # main process would orphan; its own application_name, so stop() can see in
        # pg_stat_activity that none of its database sessions is left.
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *args, "--loglevel", "INFO"],
            cwd=APP_DIR,
            env=dict(self.env, PGAPPNAME=f"{WORKER_APPLICATION_NAME}-{args[0]}"),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self):
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = self._spawn(
            "worker",
            "-Q",
            "interactive,bulk,maintenance",
            "--concurrency",
            "2",
            "--prefetch-multiplier",
            "1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        )
        # Beat is its own process, as on the appliance, so killing pool processes spares it.
        self.beat = self._spawn("beat", "--schedule", str(self.log_path.with_suffix(".schedule")))
        wait_until(
            lambda: b"ready." in self.log_path.read_bytes(), 60, message="celery worker ready"
        )

    def children(self):
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [int(pid) for pid in out.split()]

    def rss_kib(self):
        """Resident memory of the worker's main process and each pool process, in KiB."""
        pids = [self.process.pid, *self.children()]
        sizes = {}
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        return sizes

    def kill_children(self):
        children = self.children()
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        return children

    def stop(self):
        """Beat first, then the worker's warm shutdown (its running tasks finish, its
        unacknowledged messages go back to the broker); whatever is still alive after 30 s,
        or orphaned by a test's SIGKILL, is killed with its process group. Returns once no
        database session of theirs is left, so a reset of the database cannot race them."""
        for process in (self.beat, self.process):
            if process is None:  # start() failed before it was spawned
                continue
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    print(f"celery {process.args[5]} ignored SIGTERM for 30 s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        if self.log:
            self.log.close()
        wait_until(
            lambda: not worker_sessions(self.env),
            30,
            message="the worker's database sessions to end",
        )

    def log_tail(self, lines=60):
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def moto_sqs(tmp_path_factory):
    """A local SQS-compatible endpoint (moto_server) on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("moto_server")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_until(lambda: _connects(port), 20, message="moto_server")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def sqs_settings(endpoint, prefix):
    """Environment that points the app's broker at the local SQS endpoint."""
    host_port = endpoint.removeprefix("http://")
    return {
        "CELERY_BROKER_URL": f"sqs://testing:testing@{host_port}",
        "SHOESTRING_SQS_QUEUE_PREFIX": prefix,
        "SHOESTRING_SQS_QUEUE_URL_BASE": f"{endpoint}/123456789012/",
        "SHOESTRING_SQS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


def worker_sessions(env):
    """The database sessions a test worker or beat still holds, as Postgres sees them."""
    with (
        psycopg2.connect(
            dbname=env["DATABASE_NAME"], application_name="shoestring-test-probe"
        ) as probe,
        probe.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT pid, application_name, state FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            (WORKER_APPLICATION_NAME + "-%",),
        )
        rows = cursor.fetchall()
    probe.close()
    return rows


@pytest.fixture(scope="session")
def worker_env(django_db_setup, redis_url):
    from django.db import connection

    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        CELERY_BROKER_URL=redis_url,
        DATABASE_NAME=connection.settings_dict["NAME"],
        **WORKER_SETTINGS,
    )


@pytest.fixture
def celery_worker(transactional_db, worker_env, redis_url, tmp_path):
    """A real Celery worker and beat for this test alone, on an empty broker.

    Function-scoped on purpose: a worker and beat that outlived their test would act on
    the next test's rows and race the database flush that ends every transactional test
    (TRUNCATE against beat's queries: a deadlock that aborted the flush and left the
    rows to the next test). Requesting transactional_db orders the teardown: the worker
    stops, and its sessions are gone, before the database is reset."""
    import redis

    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()
    worker = Worker(worker_env, tmp_path / "worker.log")
    try:
        worker.start()
        yield worker
    finally:
        try:
            worker.stop()
        finally:
            broker.flushdb()
            # Shown by pytest only when the test failed.
            print(f"--- the last lines of {worker.log_path} ---\n{worker.log_tail()}")


def _rows_left(connection):
    """Tables holding rows after a test's reset (migrations' own rows aside)."""
    kept = {"django_migrations", "django_content_type", "auth_permission"}
    tables = sorted(set(connection.introspection.table_names()) - kept)
    with connection.cursor() as cursor:
        # The names are the database's own tables, quoted.
        cursor.execute(
            " UNION ALL ".join(
                f"SELECT %s WHERE EXISTS (SELECT 1 FROM {connection.ops.quote_name(table)})"  # noqa: S608
                for table in tables
            ),
            tables,
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Every test that used the database leaves it empty. One that did not (its flush
    failed, or it committed outside its reset) errors here, in its own teardown, and the
    database is emptied so the next test starts from what it assumes. (After the last
    test the session's teardown has dropped the test database: nothing to check.)"""
    try:
        return (yield)
    finally:
        # The mark brings the database in at run time: it is not among the fixture names.
        uses_database = (
            item.get_closest_marker("django_db") or "_django_db_helper" in item.fixturenames
        )
        if nextitem is not None and uses_database:
            _empty_or_fail(item)


def _empty_or_fail(item):
    from django.core.management import call_command
    from django.db import connection
    from pytest_django.plugin import blocking_manager_key

    with item.config.stash[blocking_manager_key].unblock():
        left = _rows_left(connection)
        if left:
            call_command("flush", interactive=False, verbosity=0)
            raise AssertionError(
                f"{item.nodeid} left rows in {', '.join(left)} after its database reset;"
                " emptied them for the next test"
            )
