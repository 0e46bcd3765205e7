"""Debian's services come back by themselves after a crash, within a start limit, and the
app answers again with nobody touching the host."""

import time

import pytest
from shoestring_host import broker_is_redis, main_pid, unit_props, wait_until

# How long the test waits, not a target: a loaded build machine (two streams of make test)
# slows Postgres' crash recovery and the pools' reconnect backoff. The time is printed.
CRASH_RECOVERY_S = 120
DEBIAN_SERVICES = ["postgresql@15-main.service", "redis-server.service", "nginx.service"]


def healthz_code(host):
    return host.run(
        "curl -sk -o /dev/null -m 5 -w '%{http_code}' https://localhost/healthz"
    ).stdout.strip()


def restarts(host, unit):
    return int(unit_props(host, unit, "NRestarts")["NRestarts"])


def sigkill_main_process(host, unit):
    """SIGKILL the service's main process, as the OOM killer or a crash would."""
    pid = main_pid(host, unit)
    assert pid > 0, f"{unit} is not running"
    host.check_output("kill -KILL %s", str(pid))
    return pid, time.monotonic()


@pytest.fixture
def crash(host, request):
    """Kill a service's main process; whatever happens, leave the service running."""
    unit = request.param
    if unit == "redis-server.service" and not broker_is_redis(host):
        pytest.skip("no Redis on a host whose broker is SQS")
    yield unit
    host.run("systemctl reset-failed %s", unit)
    host.run("systemctl start %s", unit)


@pytest.mark.parametrize("unit", DEBIAN_SERVICES)
def test_a_crashed_service_is_restarted_but_never_in_an_endless_loop(host, unit):
    if unit == "redis-server.service" and not broker_is_redis(host):
        pytest.skip("no Redis on a host whose broker is SQS")
    props = unit_props(
        host, unit, "Restart", "RestartUSec", "StartLimitBurst", "StartLimitIntervalUSec"
    )
    assert props == {
        "Restart": "on-failure",
        "RestartUSec": "5s",
        "StartLimitBurst": "5",
        "StartLimitIntervalUSec": "10min",
    }


@pytest.mark.parametrize("crash", ["postgresql@15-main.service", "nginx.service"], indirect=True)
def test_healthz_answers_again_after_a_sigkill_with_nobody_touching_the_host(host, crash):
    unit = crash
    assert healthz_code(host) == "200"
    before = restarts(host, unit)
    old_pid, killed_at = sigkill_main_process(host, unit)
    wait_until(
        lambda: healthz_code(host) == "200" and main_pid(host, unit) not in (0, old_pid),
        CRASH_RECOVERY_S,
        message=f"/healthz did not answer 200 within {CRASH_RECOVERY_S}s of killing {unit}",
    )
    print(
        f"\n{unit}: /healthz answered 200 again {time.monotonic() - killed_at:.1f}s after SIGKILL"
    )
    assert restarts(host, unit) == before + 1


@pytest.mark.parametrize("crash", ["redis-server.service"], indirect=True)
def test_the_broker_comes_back_after_a_sigkill_and_the_pools_reconnect(host, crash):
    unit = crash
    before = restarts(host, unit)
    since = host.check_output("date +%s")
    old_pid, killed_at = sigkill_main_process(host, unit)
    wait_until(
        lambda: host.service(unit).is_running and main_pid(host, unit) not in (0, old_pid),
        CRASH_RECOVERY_S,
        message=f"{unit} was not running again within {CRASH_RECOVERY_S}s",
    )
    print(f"\n{unit}: running again {time.monotonic() - killed_at:.1f}s after SIGKILL")
    assert restarts(host, unit) == before + 1
    for pool in ["interactive", "bulk", "maintenance"]:
        wait_until(
            lambda pool=pool: (
                "Connected to redis"
                in host.check_output(
                    "journalctl -u shoestring-worker-%s.service --since @%s -o cat", pool, since
                )
            ),
            CRASH_RECOVERY_S,
            message=f"the {pool} pool did not reconnect to the broker",
        )
