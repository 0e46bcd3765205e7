"""The tiers on hosts of their own (docs/scaling.md), checked from outside: which host runs
what, Postgres reachable only over TLS and only by each tier's roles from that tier's hosts, one
beat, a campaign whose batches both workers hosts act on, each within its own address's budget
as the fake network counts it, and the pause the database host's guard shares."""

import subprocess
import threading

import pytest
from conftest import ADDRESSES, FAKE_URL, container
from shoestring_host import (
    blocked_once,
    env_file,
    fake_call,
    start_campaign,
    wait_for_campaign,
)

from tests.polling import wait_until

POOLS = ("interactive", "bulk", "maintenance")
# The person's own write budget out of the way: these campaigns are about the hosts.
UNLIMITED = {"write_points_per_hour": 1_000_000, "write_points_per_day": 1_000_000}
CA = "/etc/ssl/shoestring-postgresql/ca.pem"


def running(host, unit):
    return host.service(unit).is_running


def test_each_tier_runs_on_its_own_host_and_nowhere_else(hosts):
    db, web = hosts["db"], hosts["web"]
    assert running(db, "postgresql@15-main.service")
    assert running(db, "shoestring-guard.service")
    assert not db.file("/etc/systemd/system/shoestring-web.service").exists
    assert running(web, "shoestring-web.service")
    assert running(web, "nginx.service")
    assert not web.package("postgresql-15").is_installed
    for name in ("worker-a", "worker-b"):
        worker = hosts[name]
        for pool in POOLS:
            assert running(worker, f"shoestring-worker-{pool}.service"), (name, pool)
        assert running(worker, "shoestring-guard.service"), name
        assert not worker.package("postgresql-15").is_installed, name
        assert not worker.file("/etc/systemd/system/shoestring-web.service").exists, name


def test_exactly_one_host_runs_beat(hosts):
    assert running(hosts["worker-a"], "shoestring-beat.service")
    assert not hosts["worker-b"].file("/etc/systemd/system/shoestring-beat.service").exists


def test_every_host_reaches_the_database_at_its_private_address_verifying_its_certificate(hosts):
    for name, path in [
        ("web", "/etc/shoestring/shoestring.env"),
        ("worker-a", "/etc/shoestring/worker-bulk.env"),
        ("worker-b", "/etc/shoestring/worker-interactive.env"),
    ]:
        env = env_file(hosts[name], path)
        assert env["DATABASE_HOST"] == ADDRESSES["db"], name
        assert env["DATABASE_SSLMODE"] == "verify-full", name
        assert env["DATABASE_SSLROOTCERT"] == CA, name
        assert hosts[name].file(CA).contains("BEGIN CERTIFICATE"), name


def psql_from(host, env, sslmode, user=None, sql="SELECT 1"):
    """psql from `host` to the database host with the credentials of a service's settings."""
    dsn = (
        f"host={ADDRESSES['db']} dbname={env['DATABASE_NAME']} user={user or env['DATABASE_USER']}"
        f" sslmode={sslmode} sslrootcert={CA} connect_timeout=5"
    )
    return host.run("PGPASSWORD=%s psql %s -Atc %s", env["DATABASE_PASSWORD"], dsn, sql)


@pytest.fixture(scope="module")
def psql_client(hosts):
    """The web and workers hosts have no psql of their own: Debian's client, for the checks."""
    for name in ("web", "worker-a"):
        hosts[name].run("apt-get install -y -q postgresql-client-15 >/dev/null")
    return hosts


def test_a_tier_role_logs_in_from_its_own_hosts_over_verified_tls(psql_client):
    web = psql_client["web"]
    env = env_file(web, "/etc/shoestring/shoestring.env")
    result = psql_from(
        web, env, "verify-full", sql="SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "t"


def test_a_client_without_tls_is_refused(psql_client):
    web = psql_client["web"]
    env = env_file(web, "/etc/shoestring/shoestring.env")
    result = psql_from(web, env, "disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr, result.stderr


def test_a_role_of_another_tier_is_refused_from_this_tier_s_host(psql_client):
    # The bulk pool's role and password, tried from the web host: no line admits it there.
    web, worker = psql_client["web"], psql_client["worker-a"]
    bulk = env_file(worker, "/etc/shoestring/worker-bulk.env")
    result = psql_from(web, bulk, "verify-full")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr, result.stderr
    # And the web app's role from a workers host.
    app = env_file(web, "/etc/shoestring/shoestring.env")
    result = psql_from(worker, app, "verify-full")
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr, result.stderr


def test_a_host_of_no_tier_cannot_reach_the_database_port(hosts):
    # The fake network's host: nftables on the database host drops it before Postgres sees it.
    fake = hosts["fake"]
    result = fake.run(
        "timeout 5 python3 -c %s",
        f"import socket; socket.create_connection(('{ADDRESSES['db']}', 5432), timeout=3)",
    )
    # Dropped, so the attempt times out: a refusal would mean the packet reached the host and
    # only Postgres' own listen address or pg_hba.conf stood in the way.
    assert result.rc != 0
    assert "timed out" in result.stderr, result.stderr


def remote_connections(db):
    rows = db.check_output(
        "runuser -u postgres -- psql -Atc %s",
        "SELECT a.client_addr, a.usename, s.ssl FROM pg_stat_activity a"
        " JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL"
        " AND a.client_addr <> '127.0.0.1' AND a.client_addr <> '::1'",
    ).splitlines()
    return [row.split("|") for row in rows]


class Sampler:
    """Calls sample() every half second on a thread while the block runs; .seen holds every
    distinct row it returned."""

    def __init__(self, sample):
        self.sample = sample
        self.seen = set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done.wait(0.5):
            self.seen.update(tuple(row) for row in self.sample())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(30)


def test_the_database_host_s_guard_shares_its_state_through_the_database(hosts):
    db = hosts["db"]
    # Its row, written when it started: running (nothing paused it since).
    rows = wait_until(
        lambda: db.check_output(
            "runuser -u postgres -- psql -d shoestring -Atc %s",
            "SELECT source, paused FROM core_bulkpause",
        ).splitlines(),
        60,
        message="the database host's guard to write its row",
    )
    assert f"{container('db')}|f" in rows, rows
    # The workers hosts' guards keep their pauses to their own hosts.
    assert not [row for row in rows if "worker" in row], rows


def bulk_paused_log(worker, since, word):
    return worker.run(
        "journalctl -u shoestring-worker-bulk.service --since %s --no-pager -q | grep -c %s",
        since,
        word,
    ).stdout.strip()


def test_a_pause_in_the_database_stops_the_bulk_pools_of_every_workers_host(hosts):
    db = hosts["db"]
    since = hosts["worker-a"].check_output("date '+%Y-%m-%d %H:%M:%S'")
    write = (
        "INSERT INTO core_bulkpause (source, paused, reason, changed_at)"
        " VALUES ('cluster-test', %s, 'the cluster test', now())"
        " ON CONFLICT (source) DO UPDATE SET paused = EXCLUDED.paused, changed_at = now()"
    )
    db.check_output("runuser -u postgres -- psql -d shoestring -Atc %s", write % "true")
    try:
        for name in ("worker-a", "worker-b"):
            wait_until(
                lambda name=name: int(bulk_paused_log(hosts[name], since, "paused:") or 0) > 0,
                60,
                message=f"the bulk pool on {name} to pause",
            )
    finally:
        db.check_output(
            "runuser -u postgres -- psql -d shoestring -Atc %s",
            "DELETE FROM core_bulkpause WHERE source = 'cluster-test'",
        )
    for name in ("worker-a", "worker-b"):
        wait_until(
            lambda name=name: int(bulk_paused_log(hosts[name], since, "resumed:") or 0) > 0,
            60,
            message=f"the bulk pool on {name} to resume",
        )


def by_address(web):
    return fake_call(web, "GET", "/_fake/state", fake=FAKE_URL)["totals"]["addresses"]


def test_both_workers_hosts_act_on_one_campaign_each_within_its_own_address_budget(hosts):
    web = hosts["web"]
    fake_call(web, "POST", "/_fake/reset", fake=FAKE_URL)
    count = 3000
    campaign = start_campaign(web, count, fake=FAKE_URL, **UNLIMITED)
    # The pools connect for a task and let go: watch the database's connections meanwhile.
    with Sampler(lambda: remote_connections(hosts["db"])) as connections:
        assert wait_for_campaign(web, campaign, 600) == "done"
    # Every connection from another host was encrypted, and both workers hosts connected.
    assert connections.seen, "no connection from another host was seen"
    assert all(ssl == "t" for _, _, ssl in connections.seen), connections.seen
    seen_from = {address for address, _, _ in connections.seen}
    assert {ADDRESSES["worker-a"], ADDRESSES["worker-b"]} <= seen_from, seen_from
    blocked_once(web, count, fake=FAKE_URL)
    seen = by_address(web)
    writes = {address: counts["writes"] for address, counts in seen.items()}
    # Both workers hosts wrote blocks, each from its own address.
    assert writes.get(ADDRESSES["worker-a"], 0) > 0, seen
    assert writes.get(ADDRESSES["worker-b"], 0) > 0, seen
    # Neither went over the per-address limit the fake enforces.
    assert all(counts["ip_rate_limited"] == 0 for counts in seen.values()), seen
    # Each host took from its own budget (the exporter's buckets, in the database).
    buckets = (
        hosts["db"]
        .check_output(
            "runuser -u postgres -- psql -d shoestring -Atc %s",
            "SELECT name FROM blocking_addressbudget ORDER BY name",
        )
        .splitlines()
    )
    assert {ADDRESSES["worker-a"], ADDRESSES["worker-b"]} <= set(buckets), buckets


def test_a_workers_host_stopped_mid_campaign_loses_nothing(hosts):
    web = hosts["web"]
    fake_call(web, "POST", "/_fake/reset", fake=FAKE_URL)
    count = 6000
    # Slow calls, so the campaign is still running when one host goes.
    campaign = start_campaign(web, count, fake=FAKE_URL, latency_ms=1000, **UNLIMITED)
    wait_until(
        lambda: by_address(web).get(ADDRESSES["worker-b"], {}).get("writes", 0) > 0,
        180,
        message="worker-b to start writing",
    )
    # As a host dies: systemd gets 10 s, then everything is killed. The tasks it held come
    # back by the stranded sweep (SHOESTRING_STRANDED_AFTER_S, 10 minutes), not the broker's
    # visibility timeout (an hour).
    subprocess.run(["docker", "stop", container("worker-b")], check=True, timeout=120)
    try:
        assert wait_for_campaign(web, campaign, 1500) == "done"
        blocked_once(web, count, fake=FAKE_URL)
    finally:
        subprocess.run(["docker", "start", container("worker-b")], check=True, timeout=120)
        fake_call(web, "POST", "/_fake/config", {"latency_ms": 0}, fake=FAKE_URL)
    worker_b = hosts["worker-b"]
    wait_until(
        lambda: (
            worker_b.run("systemctl is-system-running").stdout.strip() in ("running", "degraded")
        ),
        120,
        message="worker-b to boot again",
    )
    # Back after a reboot, as systemd brings a host back: every pool runs again.
    for pool in POOLS:
        wait_until(
            lambda pool=pool: running(worker_b, f"shoestring-worker-{pool}.service"),
            60,
            message=f"the {pool} pool to run on worker-b again",
        )
