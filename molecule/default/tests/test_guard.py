"""The guard (roles/guard) on the converged host, driven with a small simulated volume and a
real write load: bulk work is paused eagerly, interactive work is still served, and bulk resumes
only after the modelled burst balance stayed healthy for a while. Works on both brokers: the
pause is a flag the bulk pool reads (core.pause), and queue depths come from the broker."""

import json

import pytest
from shoestring_host import host_time, journal, wait_until

GUARD = "shoestring-guard.service"
FLAG = "/run/shoestring-guard/pause-bulk"
# A gp2 volume whose baseline sits above this shared build machine's quiet I/O and whose
# bucket a few seconds of synchronous 4 KiB writes empty: 500 GiB -> 1,500 IOPS baseline,
# 30,000 credits instead of 5.4 million.
SIMULATED = {
    "GUARD_INTERVAL_S": "3",
    "GUARD_VOLUME_TYPE": "gp2",
    "GUARD_VOLUME_SIZE_GIB": "500",
    "GUARD_GP2_CREDITS": "30000",
    "GUARD_RESUME_AFTER_S": "15",
}
TEST_ENV = "/run/shoestring-guard-test.env"
DROPIN = "/run/systemd/system/shoestring-guard.service.d/test.conf"
LOAD = "/var/lib/shoestring-guard-load"

PUBLISH = """
from config.celery_app import app
app.send_task("probe.guard_bulk", queue="bulk")
app.send_task("probe.guard_interactive", queue="interactive")
print("sent")
"""


def queue_waiting(host):
    status = json.loads(
        host.check_output("shoestring-manage status --json").strip().splitlines()[-1]
    )
    return {row["queue"]: row["waiting"] for row in status["queues"]}


def guard_state(host):
    return json.loads(host.check_output("cat /run/shoestring-guard/state.json"))


@pytest.fixture
def simulated_volume(host):
    """The real guard unit, re-pointed at a small simulated volume by a runtime drop-in (a later
    EnvironmentFile= wins); on exit the drop-in goes and the guard runs as provisioned."""
    content = "".join(f'{name}="{value}"\n' for name, value in SIMULATED.items())
    host.check_output("umask 077 && printf '%%s' %s > %s", content, TEST_ENV)
    host.check_output(
        "mkdir -p %s && printf '[Service]\\nEnvironmentFile=%s\\n' > %s",
        DROPIN.rsplit("/", 1)[0],
        TEST_ENV,
        DROPIN,
    )
    host.check_output("systemctl stop %s && rm -f %s", GUARD, FLAG)
    host.check_output("systemctl daemon-reload && systemctl start %s", GUARD)
    yield
    host.run("systemctl stop %s", GUARD)
    host.run("rm -f %s %s %s %s", DROPIN, TEST_ENV, LOAD, FLAG)
    host.run("systemctl daemon-reload && systemctl start %s", GUARD)


def test_the_guard_runs_sandboxed_and_reports_every_reading(host):
    assert host.service(GUARD).is_running
    state = wait_until(lambda: host.file("/run/shoestring-guard/state.json").exists, 40)
    assert state
    state = guard_state(host)
    assert state["paused"] is False
    assert 0 <= state["burst_balance_percent"] <= 100
    metrics = host.file("/run/shoestring-guard/metrics/shoestring_guard.prom").content_string
    assert "shoestring_guard_bulk_paused 0" in metrics


def test_a_write_load_pauses_bulk_interactive_goes_on_and_bulk_resumes_later(
    host, simulated_volume
):
    started = host_time(host)
    assert wait_until(
        lambda: (
            "watching" in host.check_output("journalctl -u %s -n 3 -o cat", GUARD)
            and "gp2 500 GiB" in host.check_output("journalctl -u %s -n 3 -o cat", GUARD)
        ),
        20,
    ), "the guard did not start on the simulated volume"
    # Synchronous 4 KiB writes: thousands of I/O operations a second, bounded in count and time.
    load = host.run("timeout -s INT 20 dd if=/dev/zero of=%s bs=4k count=200000 oflag=dsync", LOAD)
    load_ended = host_time(host)
    host.run("rm -f %s", LOAD)
    print(f"\nwrite load: {(load.stderr.strip().splitlines() or ['?'])[-1]}")
    assert wait_until(lambda: host.file(FLAG).exists, 30), "the guard did not pause bulk work"
    assert wait_until(
        lambda: (
            "paused: stopped consuming from bulk"
            in host.check_output(
                "journalctl -u shoestring-worker-bulk.service --since @%s -o cat", f"{started:.0f}"
            )
        ),
        30,
    ), "the bulk pool did not stop consuming"

    # While paused: interactive work is served, bulk work waits in the broker.
    before = queue_waiting(host)
    host.check_output("shoestring-manage shell --no-imports -c %s", PUBLISH)
    assert wait_until(lambda: queue_waiting(host)["interactive"] == 0, 30), "interactive stalled"
    waiting = queue_waiting(host)
    assert host.file(FLAG).exists, (
        "resumed before the check: the simulated volume recovered too fast"
    )
    assert waiting["bulk"] >= before["bulk"] + 1, "bulk work was taken while paused"
    assert (
        host.run("curl -sk -o /dev/null -w '%{http_code}' https://localhost/healthz").stdout
        == "200"
    )

    # Resumed only after the balance stayed healthy for GUARD_RESUME_AFTER_S.
    assert wait_until(lambda: not host.file(FLAG).exists, 240), "bulk work never resumed"
    assert wait_until(lambda: queue_waiting(host)["bulk"] <= before["bulk"], 60)

    timeline = [
        (when, message)
        for when, _, message in journal(host, GUARD, started)
        if message.startswith("guard:")
    ]
    print("guard timeline (seconds after the write load began):")
    for when, message in timeline:
        print(f"  {when - started:6.1f}s  {message}")
    print(f"  (the write load ended at {load_ended - started:.1f}s)")
    pause = next(when for when, message in timeline if "PAUSE" in message)
    healthy = [when for when, message in timeline if "healthy again" in message]
    resume = next(when for when, message in timeline if "RESUME" in message)
    assert pause < resume
    # Conservative: it resumed no sooner than GUARD_RESUME_AFTER_S after turning healthy.
    assert resume - max(w for w in healthy if w < resume) >= float(
        SIMULATED["GUARD_RESUME_AFTER_S"]
    )
    assert "burst balance" in next(m for _, m in timeline if "PAUSE" in m)
    assert wait_until(
        lambda: (
            "resumed: consuming from bulk again"
            in host.check_output(
                "journalctl -u shoestring-worker-bulk.service --since @%s -o cat", f"{started:.0f}"
            )
        ),
        30,
    )
