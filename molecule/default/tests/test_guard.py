"""The guard (roles/guard) on the converged host, driven with a small simulated volume and a
real write load: bulk work is paused eagerly, interactive work is still served, and bulk resumes
only after the modelled burst balance stayed healthy for a while. A small simulated CPU credit
bank and a real CPU load pause bulk work the same way. Works on both brokers: the
pause is a flag the bulk pool reads (core.pause), and queue depths come from the broker."""

import json
import re
import time
from contextlib import contextmanager

import pytest
from shoestring_host import env_file, host_time, journal, unit_props, wait_for_log, wait_until

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


@contextmanager
def running_with(host, unit, settings):
    """The real unit with these settings on top, by a runtime drop-in (a later EnvironmentFile=
    wins); on exit the drop-in goes and the unit runs as provisioned."""
    env = f"/run/{unit}-test.env"
    dropin = f"/run/systemd/system/{unit}.d/test.conf"
    content = "".join(f'{name}="{value}"\n' for name, value in settings.items())
    host.check_output("umask 077 && printf '%%s' %s > %s", content, env)
    host.check_output(
        "mkdir -p %s && printf '[Service]\\nEnvironmentFile=%s\\n' > %s",
        dropin.rsplit("/", 1)[0],
        env,
        dropin,
    )
    if unit == GUARD:
        host.check_output("systemctl stop %s && rm -f %s", GUARD, FLAG)
        host.check_output("systemctl daemon-reload && systemctl start %s", GUARD)
    else:
        host.check_output("systemctl daemon-reload")
    try:
        yield
    finally:
        if unit == GUARD:
            host.run("systemctl stop %s", GUARD)
        host.run("rm -f %s %s %s %s", dropin, env, LOAD, FLAG)
        host.run("systemctl daemon-reload && systemctl reset-failed %s", unit)
        if unit == GUARD:
            host.run("systemctl start %s", GUARD)


@pytest.fixture
def simulated_volume(host):
    """The real guard unit, re-pointed at a small simulated volume."""
    with running_with(host, GUARD, SIMULATED):
        yield


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
    wait_until(
        lambda: (
            "watching" in host.check_output("journalctl -u %s -n 3 -o cat", GUARD)
            and "gp2 500 GiB" in host.check_output("journalctl -u %s -n 3 -o cat", GUARD)
        ),
        20,
        message="the guard did not start on the simulated volume",
    )
    # Synchronous 4 KiB writes: thousands of I/O operations a second, bounded in count and time.
    load = host.run("timeout -s INT 20 dd if=/dev/zero of=%s bs=4k count=200000 oflag=dsync", LOAD)
    load_ended = host_time(host)
    host.run("rm -f %s", LOAD)
    print(f"\nwrite load: {(load.stderr.strip().splitlines() or ['?'])[-1]}")
    wait_until(lambda: host.file(FLAG).exists, 30, message="the guard did not pause bulk work")
    wait_until(
        lambda: (
            "paused: stopped consuming from bulk"
            in host.check_output(
                "journalctl -u shoestring-worker-bulk.service --since @%s -o cat", f"{started:.0f}"
            )
        ),
        30,
        message="the bulk pool did not stop consuming",
    )

    # While paused: interactive work is served, bulk work waits in the broker.
    before = queue_waiting(host)
    host.check_output("shoestring-manage shell --no-imports -c %s", PUBLISH)
    wait_until(lambda: queue_waiting(host)["interactive"] == 0, 30, message="interactive stalled")
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
    wait_until(lambda: not host.file(FLAG).exists, 240, message="bulk work never resumed")
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
    # Conservative: it resumed no sooner than GUARD_RESUME_AFTER_S after turning healthy, by
    # its own clock (the RESUME line says how long it was healthy) and by the journal's, whose
    # timestamps carry up to a second of scheduling jitter on a busy build machine.
    resume_after = float(SIMULATED["GUARD_RESUME_AFTER_S"])
    said = next(m for _, m in timeline if "RESUME" in m)
    assert int(re.search(r"healthy for (\d+)s", said)[1]) >= resume_after, said
    assert resume - max(w for w in healthy if w < resume) >= resume_after - 1.0
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


def metric_value(host, name):
    """A sample of the guard's textfile for the node exporter, or None."""
    text = host.file("/run/shoestring-guard/metrics/shoestring_guard.prom").content_string
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else None


def test_the_guard_shows_the_cpu_credit_bank_it_models(host):
    # On by default (guard_cpu_credits): a t3.small's bank, from the host's CPU use. In a
    # container /proc/stat is the build machine's, so the figure is its, not the container's.
    wait_until(lambda: host.file("/run/shoestring-guard/state.json").exists, 40)
    state = guard_state(host)
    assert state["cpu"] == "CPU baseline 0.4 vCPU (24 credits an hour), bank of 576 credits"
    assert state["cpu_credits_max"] == 576
    assert 0 <= state["cpu_credits"] <= 576
    assert state["cpu_vcpus_used"] >= 0
    assert 0 <= metric_value(host, "shoestring_guard_cpu_credits") <= 576
    assert metric_value(host, "shoestring_guard_cpu_credits_max") == 576
    assert metric_value(host, "shoestring_guard_cpu_vcpus_used") >= 0
    print(f"\nCPU credits {state['cpu_credits']:.1f} of 576, {state['cpu_vcpus_used']:.2f} vCPU")


CPU_LOAD = "shoestring-test-cpu-load"
# A bank of one credit (a vCPU busy for a minute) that earns 0.2 vCPU's worth: two busy CPUs
# spend what pauses bulk work (a quarter of it) in about 10 s.
SMALL_BANK = {
    "GUARD_INTERVAL_S": "2",
    "GUARD_CPU_BASELINE_VCPU": "0.2",
    "GUARD_CPU_CREDITS_MAX": "1",
    "GUARD_CPU_PAUSE_BELOW_CREDITS": "0.75",
    "GUARD_CPU_RESUME_ABOVE_CREDITS": "0.9",
}


def test_a_cpu_load_spends_the_modelled_credits_and_pauses_bulk_work(host):
    started = host_time(host)
    with running_with(host, GUARD, SMALL_BANK):
        wait_for_log(host, GUARD, started, r"bank of 1 credits: pause below 0\.75 credits", 20)
        try:
            # Two CPUs busy in a transient unit of their own: stopping it ends both.
            host.check_output(
                "systemd-run --unit=%s --collect -p RuntimeMaxSec=90 /bin/sh -c %s",
                CPU_LOAD,
                "yes > /dev/null & yes > /dev/null",
            )
            wait_until(lambda: host.file(FLAG).exists, 60, message="a CPU load did not pause")
            # The flag is made first, the state written right after.
            state = wait_until(lambda: (now := guard_state(host))["paused"] and now, 10)
        finally:
            host.run("systemctl stop %s", CPU_LOAD)
        assert re.search(r"CPU credits 0\.\d < 0\.75", state["reason"]), state["reason"]
        assert state["cpu_credits"] < 0.75
        assert state["cpu_vcpus_used"] > 1.0, "two CPUs busy"
        assert metric_value(host, "shoestring_guard_bulk_paused") == 1
        assert metric_value(host, "shoestring_guard_cpu_credits") < 0.75
        wait_until(
            lambda: (
                "paused: stopped consuming from bulk"
                in host.check_output(
                    "journalctl -u shoestring-worker-bulk.service --since @%s -o cat",
                    f"{started:.0f}",
                )
            ),
            30,
            message="the bulk pool did not stop consuming",
        )
    print("\nguard timeline with a CPU load (seconds after the test began):")
    for when, _, message in journal(host, GUARD, started):
        if message.startswith("guard:"):
            print(f"  {when - started:6.1f}s  {message}")


CLOUDWATCH = "shoestring-cloudwatch.service"
READING = "/run/shoestring-cloudwatch/burst-balance.json"
PUT_BALANCE = """
import boto3, datetime, os, sys
cloudwatch = boto3.client("cloudwatch", region_name=os.environ["CLOUDWATCH_REGION"],
                          endpoint_url=os.environ["CLOUDWATCH_ENDPOINT_URL"])
cloudwatch.put_metric_data(Namespace="AWS/EBS", MetricData=[{
    "MetricName": "BurstBalance", "Unit": "Percent", "Value": float(sys.argv[1]),
    "Dimensions": [{"Name": "VolumeId", "Value": os.environ["CLOUDWATCH_VOLUME_ID"]}],
    "Timestamp": datetime.datetime.now(datetime.UTC)
                 - datetime.timedelta(minutes=float(sys.argv[2]))}])
"""


@pytest.fixture
def cloudwatch(host):
    """Where the guard reads CloudWatch (a volume id is set: the sqs scenario), its settings."""
    if not host.file(f"/etc/systemd/system/{CLOUDWATCH}").exists:
        pytest.skip("CloudWatch is read only where a volume id is set (the sqs scenario)")
    return env_file(host, "/etc/shoestring/cloudwatch.env")


def put_burst_balance(host, percent, minutes_ago):
    """A BurstBalance datapoint in CloudWatch (moto_server here), as AWS publishes one a
    minute, sent with the reading's own settings and credentials."""
    host.check_output(
        "set -a && . /etc/shoestring/cloudwatch.env && python3 -c %s %s %s",
        PUT_BALANCE,
        str(percent),
        str(minutes_ago),
    )


def ask_cloudwatch(host):
    """The oneshot, now (as its timer does every guard_cloudwatch_interval_s); what it wrote."""
    run = host.run("systemctl start %s", CLOUDWATCH)
    assert run.rc == 0, host.check_output("journalctl -u %s -n 5 -o cat", CLOUDWATCH)
    assert unit_props(host, CLOUDWATCH, "Result")["Result"] == "success"
    return json.loads(host.check_output("cat %s", READING))


def test_cloudwatch_is_read_by_a_sandboxed_oneshot_on_a_timer_within_its_memory(host, cloudwatch):
    assert host.service("shoestring-cloudwatch.timer").is_enabled
    assert host.service("shoestring-cloudwatch.timer").is_running
    props = unit_props(host, CLOUDWATCH, "User", "Type", "MemoryMax", "MemorySwapMax")
    assert props["User"] == "shoestring-cloudwatch"
    assert props["Type"] == "oneshot"
    assert props["MemorySwapMax"] == "0"
    limit_mib = int(props["MemoryMax"]) / 2**20
    assert 20 < limit_mib < 100
    out = host.check_output("systemd-analyze security --no-pager %s", CLOUDWATCH)
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)[1])
    print(f"\n{CLOUDWATCH}: exposure {score}, MemoryMax {limit_mib:.0f} MiB")
    assert score <= 3.0
    # boto3 within its own limit (an OOM kill would make the Result "oom-kill"), and the guard
    # keeps only the standard library: the reason this is a unit of its own.
    reading = ask_cloudwatch(host)
    assert reading["volume_id"] == cloudwatch["CLOUDWATCH_VOLUME_ID"]
    assert reading["error"] is None
    assert "import boto3" not in host.file("/usr/local/lib/shoestring/guard.py").content_string
    # The guard may read it; only root and the reading's user may write it.
    listing = host.check_output("ls -ln %s", READING).split()
    assert listing[0] == "-rw-r--r--"


def test_cloudwatch_burst_balance_pauses_and_resumes_bulk_work(host, cloudwatch):
    started = host_time(host)
    fast = {"GUARD_INTERVAL_S": "2", "GUARD_RESUME_AFTER_S": "6"}
    with running_with(host, GUARD, fast):
        # A drained volume by AWS's own count, while this host's model still shows it full.
        put_burst_balance(host, 12, minutes_ago=3)
        assert ask_cloudwatch(host)["percent"] == 12
        wait_until(lambda: host.file(FLAG).exists, 30, message="CloudWatch's 12% did not pause")
        state = guard_state(host)
        assert state["paused"] is True
        assert state["cloudwatch_burst_balance_percent"] == 12
        assert "burst balance 12.0% < 30%" in state["reason"]
        metrics = host.file("/run/shoestring-guard/metrics/shoestring_guard.prom").content_string
        assert "shoestring_guard_cloudwatch_burst_balance_percent 12.00" in metrics
        status = host.run("shoestring-status").stdout
        assert "CloudWatch's BurstBalance 12.0% (datapoint from " in status, status

        # The volume refilled: a newer datapoint, and bulk work resumes after the wait.
        put_burst_balance(host, 97, minutes_ago=0)
        assert ask_cloudwatch(host)["percent"] == 97
        wait_until(lambda: not host.file(FLAG).exists, 60, message="bulk work never resumed")
    timeline = [
        (when - started, message)
        for when, _, message in journal(host, GUARD, started)
        if message.startswith("guard:")
    ]
    print("\nguard timeline with CloudWatch (seconds after the test began):")
    for when, message in timeline:
        print(f"  {when:6.1f}s  {message}")
    messages = [message for _, message in timeline]
    reset = messages.index("guard: burst balance reset to CloudWatch's 12.0%")
    pause = next(i for i, m in enumerate(messages) if "PAUSE" in m)
    refilled = messages.index("guard: burst balance reset to CloudWatch's 97.0%")
    resume = next(i for i, m in enumerate(messages) if "RESUME" in m)
    assert reset < pause < refilled < resume
    assert "CloudWatch's last 12.0%" in messages[pause]


def test_cloudwatch_out_of_reach_fails_the_unit_and_the_guard_goes_on(host, cloudwatch):
    started = host_time(host)
    # Nothing listens on port 9 of the loopback: CloudWatch out of reach, tried once.
    unreachable = {"CLOUDWATCH_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    with running_with(host, GUARD, {"GUARD_INTERVAL_S": "2"}):
        with running_with(host, CLOUDWATCH, unreachable):
            assert host.run("systemctl start %s", CLOUDWATCH).rc != 0
            assert unit_props(host, CLOUDWATCH, "Result")["Result"] == "exit-code"
            reading = json.loads(host.check_output("cat %s", READING))
            assert reading["error"].startswith("CloudWatch unreachable")
            assert host.run("systemctl start %s", CLOUDWATCH).rc != 0
            assert wait_until(
                lambda: (
                    "CloudWatch unreachable"
                    in host.check_output(
                        "journalctl -u %s --since @%s -o cat", GUARD, f"{started:.0f}"
                    )
                ),
                20,
            )
            time.sleep(5)
            assert "the guard cannot read CloudWatch" in host.run("shoestring-status").stdout
            assert host.service(GUARD).is_running
            assert not host.file(FLAG).exists
        # Reachable again: the next run succeeds and the guard says so.
        ask_cloudwatch(host)
        assert wait_until(
            lambda: (
                "CloudWatch answers again"
                in host.check_output("journalctl -u %s --since @%s -o cat", GUARD, f"{started:.0f}")
            ),
            20,
        )
    said = host.check_output("journalctl -u %s --since @%s -o cat", GUARD, f"{started:.0f}")
    assert said.count("CloudWatch unreachable") == 1, said
