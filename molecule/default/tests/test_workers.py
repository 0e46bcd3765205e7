"""The workers tier: timeout-wrapped pools, beat, the broker, restricted roles, and a
campaign run end to end on the host against the fake Bluesky server on its loopback."""

import time

import pytest
from shoestring_host import (
    blocked_once,
    broker_is_redis,
    env_file,
    start_campaign,
    unit_props,
    wait_for_campaign,
)

# pool: (concurrency, lifetime, grace, what systemd shows as TimeoutStopSec)
POOLS = {
    "interactive": (2, "8h", "1m", "1min 30s"),
    "bulk": (2, "4h", "5m", "5min 30s"),
    "maintenance": (1, "12h", "5m", "5min 30s"),
}
FLAGS = "--without-gossip --without-mingle --without-heartbeat"


@pytest.mark.parametrize(("pool", "settings"), POOLS.items())
def test_each_pool_runs_under_timeout_with_the_memory_saving_flags(host, pool, settings):
    concurrency, lifetime, grace, stop_timeout = settings
    unit = f"shoestring-worker-{pool}.service"
    props = unit_props(
        host,
        unit,
        "MainPID",
        "Restart",
        "NRestarts",
        "MemoryMax",
        "OOMScoreAdjust",
        "KillMode",
        "TimeoutStopUSec",
    )
    assert props["Restart"] == "always"
    # The warm-restart proofs restart the bulk pool on purpose, once each.
    assert int(props["NRestarts"]) <= 2, f"{unit} is restarting in a loop"
    assert props["MemoryMax"] != "infinity"
    assert props["OOMScoreAdjust"] == "500"
    # SIGTERM from systemd goes to timeout alone, which passes it to Celery's main
    # process alone; systemd waits longer than the grace before it kills anything.
    assert props["KillMode"] == "mixed"
    assert props["TimeoutStopUSec"] == stop_timeout
    main = host.check_output("cat /proc/%s/cmdline | tr '\\0' ' '", props["MainPID"])
    assert main.startswith(f"/usr/bin/timeout --foreground --kill-after={grace} {lifetime} ")
    worker = host.check_output("ps -o args= --ppid %s", props["MainPID"])
    assert f"celery -A config worker -Q {pool} {FLAGS}" in worker
    assert f"--concurrency {concurrency} --prefetch-multiplier 1" in worker


def test_beat_runs_on_its_own_without_timeout(host):
    props = unit_props(host, "shoestring-beat.service", "MainPID", "NRestarts", "MemoryMax")
    assert props["NRestarts"] == "0"
    assert props["MemoryMax"] != "infinity"
    cmdline = host.check_output("cat /proc/%s/cmdline | tr '\\0' ' '", props["MainPID"])
    assert "celery -A config beat" in cmdline
    assert "timeout" not in cmdline


def psql(host, env, sql):
    return host.run(
        "PGPASSWORD=%s psql -h 127.0.0.1 -U %s -d shoestring -Atc %s",
        env["DATABASE_PASSWORD"],
        env["DATABASE_USER"],
        sql,
    )


def test_a_pool_role_is_refused_outside_its_rights(host):
    bulk = env_file(host, "/etc/shoestring/worker-bulk.env")
    refused = [
        "SELECT count(*) FROM auth_user",
        "UPDATE blocking_linkedaccount SET handle = 'x' WHERE false",
        "DELETE FROM blocking_campaign WHERE false",
    ]
    for sql in refused:
        result = psql(host, bulk, sql)
        assert result.rc != 0, sql
        assert "permission denied" in result.stderr, sql
    allowed = psql(
        host, bulk, "UPDATE blocking_linkedaccount SET rate_limited_until = NULL WHERE false"
    )
    assert allowed.rc == 0, allowed.stderr
    maintenance = env_file(host, "/etc/shoestring/worker-maintenance.env")
    # Beat's pool reads an account's pacing state, never its password or tokens.
    for secret in ("app_password_encrypted", "access_jwt_encrypted", "refresh_jwt_encrypted"):
        sql = f"SELECT {secret} FROM blocking_linkedaccount"  # noqa: S608 (fixed column names)
        assert "permission denied" in psql(host, maintenance, sql).stderr
    readable = psql(
        host, maintenance, "SELECT api_enabled, write_points_left FROM blocking_linkedaccount"
    )
    assert readable.rc == 0, readable.stderr


def test_the_broker_is_private_and_never_evicts(host):
    if not broker_is_redis(host):
        pytest.skip("the broker is SQS in this scenario")
    assert "NOAUTH" in host.run("redis-cli -h 127.0.0.1 ping").stdout
    # The operator's account; its password is only in the root/redis-only config.
    operator = host.check_output(
        "sed -n 's/^user default on >\\([^ ]*\\) .*/\\1/p' /etc/redis/redis.conf"
    )
    settings = {
        name: host.check_output(
            "REDISCLI_AUTH=%s redis-cli -h 127.0.0.1 config get %s", operator, name
        ).splitlines()[1]
        for name in ["maxmemory-policy", "appendonly"]
    }
    assert settings == {"maxmemory-policy": "noeviction", "appendonly": "no"}
    listeners = host.check_output("ss -Hltn 'sport = :6379'").splitlines()
    assert listeners
    assert all(line.split()[3].startswith(("127.0.0.1:", "[::1]:")) for line in listeners)


def test_the_fake_network_listens_on_loopback_only_as_a_sandboxed_unit(host):
    listeners = host.check_output("ss -Hltn 'sport = :8787'").splitlines()
    assert listeners, "fakesky.service is not listening"
    assert all(line.split()[3].startswith("127.0.0.1:") for line in listeners)
    props = unit_props(host, "fakesky.service", "DynamicUser", "ProtectSystem", "MemoryMax")
    assert props == {"DynamicUser": "yes", "ProtectSystem": "strict", "MemoryMax": str(256 << 20)}


def test_a_campaign_completes_on_the_host_with_every_follower_blocked_once(host, fake_bluesky):
    count = 3000
    campaign_id = start_campaign(
        host, count, write_points_per_hour=1_000_000, write_points_per_day=1_000_000
    )
    assert wait_for_campaign(host, campaign_id, timeout=180) == "done"
    blocked_once(host, count)
    rss = host.check_output("ps -eo rss=,args= | grep '[c]elery -A config' | cut -c1-90")
    print("\nworker RSS (KiB) after the campaign:\n" + rss)


SHORT_LIFETIME = """[Service]
Environment=WORKER_LIFETIME=60s WORKER_GRACE=30s
"""


@pytest.fixture
def short_lived_bulk_pool(host):
    if not broker_is_redis(host):
        pytest.skip("proved once, in the default (Redis) scenario")
    dropin = "/run/systemd/system/shoestring-worker-bulk.service.d"
    host.check_output(
        "mkdir -p %s && printf '%%s' %s > %s/lifetime.conf", dropin, SHORT_LIFETIME, dropin
    )
    host.check_output("systemctl daemon-reload && systemctl restart shoestring-worker-bulk.service")
    yield
    host.check_output("rm -rf %s && systemctl daemon-reload", dropin)
    host.check_output("systemctl restart shoestring-worker-bulk.service")


def test_a_pool_restarted_by_timeout_mid_campaign_loses_and_repeats_nothing(
    host, fake_bluesky, short_lived_bulk_pool
):
    if not broker_is_redis(host):
        pytest.skip("proved once, in the default (Redis) scenario")
    before = int(host.check_output("systemctl show -P NRestarts shoestring-worker-bulk.service"))
    count = 1000
    # 200 blocks per 20-second window: the campaign takes about 100 s, and the
    # bulk pool's 60-second lifetime ends while its work waits for the budget.
    # Pacing keeps the account under the budget, so the fake need not answer
    # 429 at all: the proof of waiting is the campaign outliving the lifetime.
    started = time.monotonic()
    campaign_id = start_campaign(host, count, write_points_per_hour=600, hour_window_s=20)
    assert wait_for_campaign(host, campaign_id, timeout=400) == "done"
    assert time.monotonic() - started > 60, "the campaign did not wait for its budget"
    restarts = int(host.check_output("systemctl show -P NRestarts shoestring-worker-bulk.service"))
    assert restarts > before, "the bulk pool was not restarted by timeout during the campaign"
    blocked_once(host, count)
