#!/usr/bin/python3
"""shoestring-guard: pause bulk work before the disk's burst balance or the memory runs out.

Every GUARD_INTERVAL_S seconds it reads the data volume's I/O count from /proc/diskstats and
models the EBS burst bucket that can run out (gp2: the volume's own, a baseline of IOPS-per-GiB
times the size, at least a minimum, bursting to a cap while credits last; gp3: the volume is a
flat limit, so the bucket is the instance's own EBS burst), and reads the memory pressure
(/proc/pressure/memory) and the swap-ins (/proc/vmstat). Pause eagerly: the first reading past a
pause threshold creates the pause flag, which the bulk pool reads (it stops consuming its
queues, in flight tasks finish; core.pause). Resume conservatively: only after every reading
stayed past the resume thresholds for GUARD_RESUME_AFTER_S. Each decision is logged with its
numbers; the current state is in GUARD_STATE_DIR/state.json and, for the node exporter's
textfile collector, GUARD_STATE_DIR/metrics/shoestring_guard.prom (both on tmpfs: the guard
itself writes nothing to the disk it protects).

On AWS, when the volume type's id is set, shoestring-cloudwatch.timer writes CloudWatch's own
figure for that bucket to GUARD_CLOUDWATCH_FILE every few minutes (gp2: the volume's
BurstBalance; gp3: the instance's EBSIOBalance%); each new datapoint resets the model (which
starts full and knows only what this host did since the guard started). When CloudWatch cannot
be asked, the guard says so once and goes on with the model alone.

The decisions are pure, apart from the I/O in main(): decide() and the Volume model, tested off
the host by tests/test_guard_decide.py."""

import json
import os
import signal
import sys
import time
from collections import namedtuple
from pathlib import Path

ENV = os.environ


def setting(name, default, kind=float):
    return kind(ENV.get(name, default))


class Volume:
    """The EBS burst bucket that can run out, modelled from the I/O count of the data volume.
    gp2: the volume's own, a baseline of IOPS per GiB (at least a minimum) and a bucket of
    credits to burst with. gp3: the volume is a flat limit with no bucket, so the bucket is the
    instance's EBS burst (a t3.small: a baseline of 1,000 IOPS, 11,800 for 30 minutes), spent
    above the instance's baseline. The bucket starts full."""

    def __init__(
        self,
        volume_type,
        size_gib,
        *,
        gp2_min_iops,
        gp2_iops_per_gib,
        gp2_burst_iops,
        gp2_credits,
        gp3_iops,
        instance_baseline_iops=1000,
        instance_burst_iops=11800,
        instance_burst_minutes=30,
    ):
        self.type = volume_type
        self.size_gib = size_gib
        self.gp3_iops = gp3_iops
        if self.type == "gp2":
            self.baseline = max(gp2_min_iops, gp2_iops_per_gib * self.size_gib)
            self.burst = gp2_burst_iops
            self.capacity = gp2_credits
        else:
            self.baseline = instance_baseline_iops
            self.burst = instance_burst_iops
            # AWS publishes the burst as a time at full rate: that many I/Os above the baseline.
            # It publishes no refill rate; like gp2's, credits are earned below the baseline.
            self.capacity = (
                (instance_burst_iops - instance_baseline_iops) * instance_burst_minutes * 60
            )
        self.credits = self.capacity

    @classmethod
    def from_env(cls):
        return cls(
            ENV.get("GUARD_VOLUME_TYPE", "gp2"),
            setting("GUARD_VOLUME_SIZE_GIB", 20),
            gp2_min_iops=setting("GUARD_GP2_MIN_IOPS", 100),
            gp2_iops_per_gib=setting("GUARD_GP2_IOPS_PER_GIB", 3),
            gp2_burst_iops=setting("GUARD_GP2_BURST_IOPS", 3000),
            gp2_credits=setting("GUARD_GP2_CREDITS", 5.4e6),
            gp3_iops=setting("GUARD_GP3_IOPS", 3000),
            instance_baseline_iops=setting("GUARD_INSTANCE_EBS_BASELINE_IOPS", 1000),
            instance_burst_iops=setting("GUARD_INSTANCE_EBS_BURST_IOPS", 11800),
            instance_burst_minutes=setting("GUARD_INSTANCE_EBS_BURST_MINUTES", 30),
        )

    def spend(self, iops, seconds):
        """Credits are spent above the baseline and earned below it, up to the bucket's size."""
        self.credits = min(self.capacity, max(0.0, self.credits + (self.baseline - iops) * seconds))

    def resync(self, percent):
        """AWS's own figure (CloudWatch's, in percent) replaces the model's."""
        self.credits = self.capacity * min(100.0, max(0.0, percent)) / 100.0

    def balance_percent(self):
        """The bucket's fill in percent."""
        return 100.0 * self.credits / self.capacity

    def describe(self):
        bucket = (
            f"baseline {self.baseline:.0f} IOPS, burst {self.burst:.0f}, bucket "
            f"{self.capacity:.0f} credits"
        )
        if self.type == "gp2":
            return f"gp2 {self.size_gib:g} GiB: {bucket}"
        return f"gp3 {self.size_gib:g} GiB, {self.gp3_iops:.0f} IOPS; the instance's EBS: {bucket}"


# What CloudWatch calls each type's bucket, and the id it is published under
# (shoestring_cloudwatch.py asks for it).
CLOUDWATCH_METRICS = {"gp2": ("BurstBalance", "volume id"), "gp3": ("EBSIOBalance%", "instance id")}


class CloudWatchBalance:
    """CloudWatch's figure for the bucket (gp2: the volume's BurstBalance; gp3: the instance's
    EBSIOBalance%), as shoestring-cloudwatch last wrote it."""

    def __init__(self, path, volume_type="gp2"):
        self.path = Path(path) if path else None
        self.metric, self.named_by = CLOUDWATCH_METRICS[volume_type]
        self.applied_at = None  # time of the newest datapoint the model was reset to
        self.percent = None
        self.error = None

    def describe(self):
        if self.path is None:
            return f"CloudWatch not asked (no {self.named_by})"
        return f"CloudWatch's {self.metric} from {self.path}"

    def poll(self):
        """A datapoint newer than the last one applied, in percent, else None. Says once when
        CloudWatch could not be asked, and once when it can again."""
        if self.path is None:
            return None
        try:
            reading = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # not asked yet (the timer's first run), or being replaced
        error = reading.get("error")
        if error != self.error:
            self.error = error
            if error:
                log(f"guard: {error}; going on with the modelled balance alone")
            else:
                log("guard: CloudWatch answers again")
        when, percent = reading.get("datapoint_at"), reading.get("percent")
        if when is None or percent is None or (self.applied_at and when <= self.applied_at):
            return None
        self.applied_at, self.percent = when, float(percent)
        return self.percent


# namedtuple, not dataclasses or typing: nothing more to import into the guard's small memory.
class Thresholds(
    namedtuple(
        "Thresholds",
        "pause_below resume_above pressure_pause pressure_resume swapin_pause resume_after",
    )
):
    """When to pause: the burst balance below pause_below percent, or the memory pressure (PSI
    some avg10) over pressure_pause, or the swap-ins over swapin_pause pages/s. When to resume:
    the balance at least resume_above, the pressure under pressure_resume and the swap-ins at
    most swapin_pause, for resume_after seconds on end."""

    __slots__ = ()

    @classmethod
    def from_env(cls):
        return cls(
            pause_below=setting("GUARD_PAUSE_BELOW_PERCENT", 30),
            resume_above=setting("GUARD_RESUME_ABOVE_PERCENT", 50),
            pressure_pause=setting("GUARD_MEMORY_PRESSURE_PAUSE", 20),
            pressure_resume=setting("GUARD_MEMORY_PRESSURE_RESUME", 5),
            swapin_pause=setting("GUARD_SWAPIN_PAUSE_PER_S", 50),
            resume_after=setting("GUARD_RESUME_AFTER_S", 300),
        )


# One reading: the burst balance (percent), the memory pressure, the swap-ins per second, and
# whether the pause flag is there.
Reading = namedtuple("Reading", "balance pressure swapin_rate flag_exists")


class State(namedtuple("State", "paused healthy_since reason pauses resumes")):
    """What the guard decided so far: whether bulk work is paused; since when (the caller's
    clock) the readings have been healthy while paused, else None; why it paused or resumed;
    its pauses and resumes since it started."""

    __slots__ = ()

    @classmethod
    def starting(cls, paused):
        return cls(paused=paused, healthy_since=None, reason="starting", pauses=0, resumes=0)

    @property
    def counts(self):
        return {"pause": self.pauses, "resume": self.resumes}


# What decide() decided: the new State; what to do with the pause flag ("touch", "unlink" or
# None: leave it); the lines to log, in order, each to be followed by the numbers in brackets;
# the reason to publish.
Decision = namedtuple("Decision", "state flag said shown")


def decide(state, reading, thresholds, now):
    """The next State from the last one and a Reading at `now` (seconds, the caller's clock).
    Pause eagerly: the first reading past any pause threshold. Resume conservatively: only once
    every reading stayed healthy for thresholds.resume_after. A flag removed by hand while
    paused ends the pause (the next alarm pauses again)."""
    t = thresholds
    balance, pressure, swapin_rate = reading.balance, reading.pressure, reading.swapin_rate
    alarms = [
        text
        for text, bad in [
            (f"burst balance {balance:.1f}% < {t.pause_below:g}%", balance < t.pause_below),
            (f"memory pressure {pressure:.2f} > {t.pressure_pause:g}", pressure > t.pressure_pause),
            (f"swap-ins {swapin_rate:.1f}/s > {t.swapin_pause:g}/s", swapin_rate > t.swapin_pause),
        ]
        if bad
    ]
    paused, healthy_since, reason = state.paused, state.healthy_since, state.reason
    pauses, resumes = state.pauses, state.resumes
    flag, said = None, []
    if paused and not reading.flag_exists:
        # The operator removed the flag: bulk work runs again; the next alarm pauses it.
        paused, healthy_since = False, None
        said.append("guard: the pause flag was removed by hand: bulk work runs")
    healthy = (
        balance >= t.resume_above and pressure < t.pressure_resume and swapin_rate <= t.swapin_pause
    )
    if not paused and alarms:
        paused, healthy_since, reason = True, None, "; ".join(alarms)
        flag = "touch"
        pauses += 1
        said.append(f"guard: PAUSE bulk work: {reason}")
    elif paused:
        if not healthy:
            healthy_since = None
        elif healthy_since is None:
            healthy_since = now
            said.append(f"guard: healthy again, resuming in {t.resume_after:g}s if it stays so")
        elif now - healthy_since >= t.resume_after:
            paused, healthy_since, reason = False, None, f"healthy for {now - healthy_since:.0f}s"
            flag = "unlink"
            resumes += 1
            said.append(f"guard: RESUME bulk work: {reason}")
    return Decision(
        state=State(paused, healthy_since, reason, pauses, resumes),
        flag=flag,
        said=tuple(said),
        shown=reason if paused else ("healthy" if not alarms else reason),
    )


def find_device(configured, data_path):
    """The block device to watch: the configured one, else the one holding data_path, else
    (a container, whose root is an overlay) the whole disk with the most completed writes."""
    stats = read_diskstats()
    if configured:
        return configured
    try:
        device = os.stat(data_path).st_dev
        major, minor = os.major(device), os.minor(device)
        for name, (dev_major, dev_minor, _) in stats.items():
            if (dev_major, dev_minor) == (major, minor):
                return name
    except OSError:
        pass
    disks = {
        name: ios
        for name, (_, _, ios) in stats.items()
        if not name.startswith(("loop", "ram", "zram", "dm-", "sr"))
        and Path(f"/sys/block/{name}").exists()
    }
    return max(disks, key=disks.get)


def read_diskstats():
    stats = {}
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        # reads completed (4th field) and writes completed (8th): EBS counts operations.
        stats[fields[2]] = (int(fields[0]), int(fields[1]), int(fields[3]) + int(fields[7]))
    return stats


def memory_pressure():
    try:
        first = Path("/proc/pressure/memory").read_text().split("\n", 1)[0]
        return float(dict(item.split("=") for item in first.split()[1:])["avg10"])
    except (OSError, KeyError, ValueError):
        return 0.0


def swap_ins():
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pswpin "):
            return int(line.split()[1])
    return 0


def log(message):
    print(message, flush=True)


def write_atomic(path, text):
    partial = path.with_name(path.name + ".new")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)


METRICS = """# HELP shoestring_guard_bulk_paused 1 while the guard has paused bulk work.
# TYPE shoestring_guard_bulk_paused gauge
shoestring_guard_bulk_paused {paused}
# HELP shoestring_guard_burst_balance_percent The modelled EBS burst balance.
# TYPE shoestring_guard_burst_balance_percent gauge
shoestring_guard_burst_balance_percent {balance:.2f}
# HELP shoestring_guard_cloudwatch_burst_balance_percent CloudWatch's {metric} (-1: none).
# TYPE shoestring_guard_cloudwatch_burst_balance_percent gauge
shoestring_guard_cloudwatch_burst_balance_percent {cloudwatch:.2f}
# HELP shoestring_guard_volume_iops I/O operations per second on the data volume.
# TYPE shoestring_guard_volume_iops gauge
shoestring_guard_volume_iops {iops:.1f}
# HELP shoestring_guard_memory_pressure_some_avg10 Memory PSI, some, avg10.
# TYPE shoestring_guard_memory_pressure_some_avg10 gauge
shoestring_guard_memory_pressure_some_avg10 {pressure:.2f}
# HELP shoestring_guard_swap_ins_per_second Pages swapped in per second.
# TYPE shoestring_guard_swap_ins_per_second gauge
shoestring_guard_swap_ins_per_second {swapin:.1f}
# HELP shoestring_guard_decisions_total Pauses and resumes since the guard started.
# TYPE shoestring_guard_decisions_total counter
shoestring_guard_decisions_total{{decision="pause"}} {pauses}
shoestring_guard_decisions_total{{decision="resume"}} {resumes}
"""


def publish(
    state_dir, paused, reason, device, volume, cloudwatch, balance, iops, pressure, swapin, counts
):
    """The state for shoestring-status, and the same as metrics for the node exporter."""
    state = {
        "time": time.time(),
        "paused": paused,
        "reason": reason,
        "device": device,
        "volume": volume.describe(),
        "burst_balance_percent": balance,
        "credits": volume.credits,
        "cloudwatch": cloudwatch.describe(),
        "cloudwatch_asked": cloudwatch.path is not None,
        "cloudwatch_metric": cloudwatch.metric,
        "cloudwatch_burst_balance_percent": cloudwatch.percent,
        "cloudwatch_datapoint_at": cloudwatch.applied_at,
        "cloudwatch_error": cloudwatch.error,
        "iops": iops,
        "memory_some_avg10": pressure,
        "swap_ins_per_s": swapin,
        "decisions": counts,
    }
    write_atomic(state_dir / "state.json", json.dumps(state))
    write_atomic(
        state_dir / "metrics" / "shoestring_guard.prom",
        METRICS.format(
            paused=int(paused),
            balance=balance,
            cloudwatch=-1 if cloudwatch.percent is None else cloudwatch.percent,
            metric=cloudwatch.metric,
            iops=iops,
            pressure=pressure,
            swapin=swapin,
            pauses=counts["pause"],
            resumes=counts["resume"],
        ),
    )


def main():
    interval = setting("GUARD_INTERVAL_S", 15)
    thresholds = Thresholds.from_env()
    state_dir = Path(ENV.get("GUARD_STATE_DIR", "/run/shoestring-guard"))
    flag = state_dir / "pause-bulk"
    # Readable by the node exporter and shoestring-status; the service's umask is 0077.
    (state_dir / "metrics").mkdir(exist_ok=True)
    (state_dir / "metrics").chmod(0o755)

    volume = Volume.from_env()
    cloudwatch = CloudWatchBalance(ENV.get("GUARD_CLOUDWATCH_FILE", ""), volume.type)
    device = find_device(
        ENV.get("GUARD_DEVICE", ""), ENV.get("GUARD_DATA_PATH", "/var/lib/postgresql")
    )
    state = State.starting(paused=flag.exists())
    t = thresholds
    log(
        f"guard: watching {device} as {volume.describe()}; pause below {t.pause_below:g}% or "
        f"memory pressure over {t.pressure_pause:g} or swap-ins over {t.swapin_pause:g}/s, resume "
        f"after {t.resume_after:g}s above {t.resume_above:g}% and under {t.pressure_resume:g};"
        f" every {interval:g}s; {cloudwatch.describe()}"
        + ("; bulk work is paused (flag present)" if state.paused else "")
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    publish(
        state_dir,
        state.paused,
        "starting",
        device,
        volume,
        cloudwatch,
        volume.balance_percent(),
        0.0,
        memory_pressure(),
        0.0,
        state.counts,
    )
    last_ios, last_swapin, last_time = read_diskstats()[device][2], swap_ins(), time.monotonic()
    while True:
        time.sleep(interval)
        now = time.monotonic()
        elapsed = now - last_time
        ios, swapin = read_diskstats()[device][2], swap_ins()
        iops = (ios - last_ios) / elapsed
        swapin_rate = (swapin - last_swapin) / elapsed
        last_ios, last_swapin, last_time = ios, swapin, now
        volume.spend(iops, elapsed)
        from_aws = cloudwatch.poll()
        if from_aws is not None:
            volume.resync(from_aws)
            log(f"guard: burst balance reset to CloudWatch's {from_aws:.1f}%")
        balance = volume.balance_percent()
        pressure = memory_pressure()
        numbers = (
            f"burst balance {balance:.1f}% ({volume.credits:.0f} credits), {iops:.0f} IOPS,"
            f" memory pressure {pressure:.2f}, swap-ins {swapin_rate:.1f}/s"
        )
        if cloudwatch.percent is not None:
            numbers += f"; CloudWatch's last {cloudwatch.percent:.1f}%"
        decision = decide(
            state, Reading(balance, pressure, swapin_rate, flag.exists()), thresholds, now
        )
        state = decision.state
        if decision.flag == "touch":
            flag.touch()
        elif decision.flag == "unlink":
            flag.unlink(missing_ok=True)
        for message in decision.said:
            log(f"{message} ({numbers})")
        publish(
            state_dir,
            state.paused,
            decision.shown,
            device,
            volume,
            cloudwatch,
            balance,
            iops,
            pressure,
            swapin_rate,
            state.counts,
        )


if __name__ == "__main__":
    sys.exit(main())
