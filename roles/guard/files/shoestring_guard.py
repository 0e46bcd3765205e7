#!/usr/bin/python3
"""shoestring-guard: pause bulk work before the disk's burst balance, the CPU credits or the memory
run out.

Every GUARD_INTERVAL_S seconds it reads the data volume's I/O count from /proc/diskstats and
models the EBS burst bucket that can run out (gp2: the volume's own, a baseline of IOPS-per-GiB
times the size, at least a minimum, bursting to a cap while credits last; gp3: the volume is a
flat limit, so the bucket is the instance's own EBS burst), and reads the memory pressure
(/proc/pressure/memory) and the swap-ins (/proc/vmstat). Unless GUARD_CPU_CREDITS is false, it
models the instance's CPU credit bank too (a burstable type in standard mode is held to its
baseline once the bank is empty) from the CPU time every process used (/proc/stat). Pause
eagerly: the first reading past a pause threshold creates the pause flag, which the bulk pool
reads (it stops consuming its queues, in flight tasks finish; core.pause). Resume
conservatively: only after every reading stayed past the resume thresholds for
GUARD_RESUME_AFTER_S. Each decision is logged with its numbers; the current state is in
GUARD_STATE_DIR/state.json and, for the node exporter's textfile collector,
GUARD_STATE_DIR/metrics/shoestring_guard.prom (both on tmpfs: the guard itself writes nothing to
the disk it protects).

On AWS, when the volume type's id is set, shoestring-cloudwatch.timer writes CloudWatch's own
figure for that bucket to GUARD_CLOUDWATCH_FILE every few minutes (gp2: the volume's
BurstBalance; gp3: the instance's EBSIOBalance%), and with the instance's id the instance's
CPUCreditBalance to GUARD_CLOUDWATCH_CPU_FILE; each new datapoint resets its model (each starts
full and knows only what this host did since the guard started). When CloudWatch cannot be
asked, the guard says so once and goes on with the model alone.

On the database's host (GUARD_SHARE_DATABASE set) the pause travels to every host's bulk pool:
each time the guard pauses or resumes, and once at start, it writes its state to the row of this
host in the app's core_bulkpause table with psql over the unix socket (peer login as its own
role, which may touch only that table); every bulk pool reads the table as well as its own
host's flag (core.pause). A row it cannot write is written at the next reading.

The decisions are pure, apart from the I/O in main(): decide() and the Volume and CpuCredits
models; status() and metrics() build what is published. tests/test_guard_decide.py tests them off
the host."""

import json
import os
import signal
import socket
import subprocess
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


class CpuCredits:
    """The instance's CPU credit bank (a burstable type in standard mode), modelled from the CPU
    time every process on the host used. A credit is one vCPU busy for a minute: the bank earns
    the baseline's worth (a t3.small: 0.4 vCPU, 24 credits an hour), spends what was used, holds
    at most credits_max (a t3.small: 576, a day's earnings) and never goes below empty, where a
    standard instance is held to its baseline. It starts full, like the disk's bucket."""

    def __init__(self, baseline_vcpu, credits_max):
        self.baseline_vcpu = baseline_vcpu
        self.credits_max = credits_max
        self.credits = credits_max

    @classmethod
    def from_env(cls):
        """The bank, or None where the guard does not watch it (GUARD_CPU_CREDITS false: an
        instance in unlimited mode, or a type that earns no credits)."""
        if ENV.get("GUARD_CPU_CREDITS", "true").strip().lower() not in ("true", "yes", "1"):
            return None
        return cls(setting("GUARD_CPU_BASELINE_VCPU", 0.4), setting("GUARD_CPU_CREDITS_MAX", 576))

    def spend(self, vcpus, seconds):
        """The baseline's worth earned, vcpus' worth spent, over seconds; within 0 and the max."""
        earned = (self.baseline_vcpu - vcpus) * seconds / 60.0
        self.credits = min(self.credits_max, max(0.0, self.credits + earned))

    def resync(self, credits):
        """AWS's own figure (CloudWatch's CPUCreditBalance) replaces the model's."""
        self.credits = min(self.credits_max, max(0.0, credits))

    def describe(self):
        return (
            f"CPU baseline {self.baseline_vcpu:g} vCPU ({self.baseline_vcpu * 60:g} credits an"
            f" hour), bank of {self.credits_max:g} credits"
        )


# What CloudWatch calls each bucket, the id it is published under (shoestring_cloudwatch.py asks
# for it), the key of its figure in the file that writes, and the model's name and unit for it.
CLOUDWATCH_METRICS = {
    "gp2": ("BurstBalance", "volume id", "percent", "burst balance", "%"),
    "gp3": ("EBSIOBalance%", "instance id", "percent", "burst balance", "%"),
    "cpu": ("CPUCreditBalance", "instance id", "credits", "CPU credits", " credits"),
}


class CloudWatchBalance:
    """CloudWatch's figure for a bucket (gp2: the volume's BurstBalance; gp3: the instance's
    EBSIOBalance%; cpu: the instance's CPUCreditBalance), as shoestring-cloudwatch last wrote
    it."""

    def __init__(self, path, bucket="gp2"):
        self.path = Path(path) if path else None
        self.metric, self.named_by, self.key, self.model, self.unit = CLOUDWATCH_METRICS[bucket]
        self.applied_at = None  # time of the newest datapoint the model was reset to
        self.value = None
        self.error = None

    def describe(self):
        if self.path is None:
            return f"CloudWatch not asked (no {self.named_by})"
        return f"CloudWatch's {self.metric} from {self.path}"

    def poll(self):
        """A datapoint newer than the last one applied (percent, or credits), else None. Says
        once when CloudWatch could not be asked, and once when it can again."""
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
                log(f"guard: {error}; going on with the modelled {self.model} alone")
            else:
                log(f"guard: CloudWatch answers again ({self.metric})")
        when, value = reading.get("datapoint_at"), reading.get(self.key)
        if when is None or value is None or (self.applied_at and when <= self.applied_at):
            return None
        self.applied_at, self.value = when, float(value)
        return self.value

    def reset(self, model):
        """Reset the model to a datapoint it has not had yet, if there is one, and say so."""
        value = self.poll()
        if value is not None:
            model.resync(value)
            log(f"guard: {self.model} reset to CloudWatch's {value:.1f}{self.unit}")

    def last(self):
        """The last datapoint applied, for the log's numbers ("" if none)."""
        if self.value is None:
            return ""
        return f"; CloudWatch's last {self.value:.1f}{self.unit}"


# namedtuple, not dataclasses or typing: nothing more to import into the guard's small memory.
class Thresholds(
    namedtuple(
        "Thresholds",
        "pause_below resume_above pressure_pause pressure_resume swapin_pause resume_after"
        " cpu_pause_below cpu_resume_above",
    )
):
    """When to pause: the burst balance below pause_below percent, or the memory pressure (PSI
    some avg10) over pressure_pause, or the swap-ins over swapin_pause pages/s, or the CPU credits
    below cpu_pause_below. When to resume: the balance at least resume_above, the pressure under
    pressure_resume, the swap-ins at most swapin_pause and the CPU credits at least
    cpu_resume_above, for resume_after seconds on end."""

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
            cpu_pause_below=setting("GUARD_CPU_PAUSE_BELOW_CREDITS", 57.6),
            cpu_resume_above=setting("GUARD_CPU_RESUME_ABOVE_CREDITS", 144),
        )


# One reading: the burst balance (percent), the memory pressure, the swap-ins per second, whether
# the pause flag is there, and the CPU credits (None: not watched, GUARD_CPU_CREDITS false).
Reading = namedtuple("Reading", "balance pressure swapin_rate flag_exists cpu_credits")


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
    paused ends the pause (the next alarm pauses again). CPU credits of None are not watched: they
    neither pause nor hold a pause."""
    t = thresholds
    balance, pressure, swapin_rate = reading.balance, reading.pressure, reading.swapin_rate
    cpu = reading.cpu_credits
    checks = [
        (f"burst balance {balance:.1f}% < {t.pause_below:g}%", balance < t.pause_below),
        (f"memory pressure {pressure:.2f} > {t.pressure_pause:g}", pressure > t.pressure_pause),
        (f"swap-ins {swapin_rate:.1f}/s > {t.swapin_pause:g}/s", swapin_rate > t.swapin_pause),
    ]
    if cpu is not None:
        checks.append((f"CPU credits {cpu:.1f} < {t.cpu_pause_below:g}", cpu < t.cpu_pause_below))
    alarms = [text for text, bad in checks if bad]
    paused, healthy_since, reason = state.paused, state.healthy_since, state.reason
    pauses, resumes = state.pauses, state.resumes
    flag, said = None, []
    if paused and not reading.flag_exists:
        # The operator removed the flag: bulk work runs again; the next alarm pauses it.
        paused, healthy_since = False, None
        said.append("guard: the pause flag was removed by hand: bulk work runs")
    healthy = (
        balance >= t.resume_above
        and pressure < t.pressure_resume
        and swapin_rate <= t.swapin_pause
        and (cpu is None or cpu >= t.cpu_resume_above)
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


def cpu_busy_s(stat, ticks_per_s):
    """Seconds of CPU every CPU spent busy since boot, from /proc/stat's first line ("cpu" and
    clock ticks: user nice system idle iowait irq softirq steal guest guest_nice). Idle and iowait
    are not busy; steal is time the hypervisor gave to others (a throttled t3 shows it); guest
    time is counted in user and nice already."""
    fields = stat.split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(field) for field in fields[1:8])
    return (user + nice + system + irq + softirq) / ticks_per_s


def read_cpu_busy_s():
    return cpu_busy_s(Path("/proc/stat").read_text(), os.sysconf("SC_CLK_TCK"))


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
# HELP shoestring_guard_cpu_vcpus_used vCPUs busy over the last reading, every process on the host.
# TYPE shoestring_guard_cpu_vcpus_used gauge
shoestring_guard_cpu_vcpus_used {vcpus:.3f}
# HELP shoestring_guard_decisions_total Pauses and resumes since the guard started.
# TYPE shoestring_guard_decisions_total counter
shoestring_guard_decisions_total{{decision="pause"}} {pauses}
shoestring_guard_decisions_total{{decision="resume"}} {resumes}
"""

# Only where the guard watches the CPU credits (GUARD_CPU_CREDITS true).
CPU_METRICS = """# HELP shoestring_guard_cpu_credits The modelled CPU credit bank (vCPU-minutes).
# TYPE shoestring_guard_cpu_credits gauge
shoestring_guard_cpu_credits {credits:.2f}
# HELP shoestring_guard_cpu_credits_max The most CPU credits the bank holds.
# TYPE shoestring_guard_cpu_credits_max gauge
shoestring_guard_cpu_credits_max {credits_max:g}
# HELP shoestring_guard_cloudwatch_cpu_credit_balance CloudWatch's CPUCreditBalance (-1: none).
# TYPE shoestring_guard_cloudwatch_cpu_credit_balance gauge
shoestring_guard_cloudwatch_cpu_credit_balance {cloudwatch:.2f}
"""

# The rates measured over the last interval: I/O operations, memory pressure (PSI some avg10),
# pages swapped in and vCPUs busy, each a second.
Rates = namedtuple("Rates", "iops pressure swapin vcpus")


def status(state, reason, device, volume, cloudwatch, cpu, cpu_cloudwatch, rates):
    """What the guard shows: state.json for shoestring-status, and the metrics' source. The
    cpu_* figures are None where the CPU credits are not watched (cpu None)."""
    return {
        "time": time.time(),
        "paused": state.paused,
        "reason": reason,
        "device": device,
        "volume": volume.describe(),
        "burst_balance_percent": volume.balance_percent(),
        "credits": volume.credits,
        "cloudwatch": cloudwatch.describe(),
        "cloudwatch_asked": cloudwatch.path is not None,
        "cloudwatch_metric": cloudwatch.metric,
        "cloudwatch_burst_balance_percent": cloudwatch.value,
        "cloudwatch_datapoint_at": cloudwatch.applied_at,
        "cloudwatch_error": cloudwatch.error,
        "iops": rates.iops,
        "memory_some_avg10": rates.pressure,
        "swap_ins_per_s": rates.swapin,
        "cpu_vcpus_used": rates.vcpus,
        "cpu": cpu.describe() if cpu else "CPU credits not watched (guard_cpu_credits false)",
        "cpu_credits": cpu.credits if cpu else None,
        "cpu_credits_max": cpu.credits_max if cpu else None,
        "cpu_cloudwatch": cpu_cloudwatch.describe() if cpu else None,
        "cpu_cloudwatch_asked": bool(cpu) and cpu_cloudwatch.path is not None,
        "cpu_cloudwatch_credits": cpu_cloudwatch.value if cpu else None,
        "cpu_cloudwatch_datapoint_at": cpu_cloudwatch.applied_at if cpu else None,
        "cpu_cloudwatch_error": cpu_cloudwatch.error if cpu else None,
        "decisions": state.counts,
    }


def metrics(shown):
    """The node exporter's textfile, from what status() shows."""
    text = METRICS.format(
        paused=int(shown["paused"]),
        balance=shown["burst_balance_percent"],
        cloudwatch=none_as(shown["cloudwatch_burst_balance_percent"]),
        metric=shown["cloudwatch_metric"],
        iops=shown["iops"],
        pressure=shown["memory_some_avg10"],
        swapin=shown["swap_ins_per_s"],
        vcpus=shown["cpu_vcpus_used"],
        pauses=shown["decisions"]["pause"],
        resumes=shown["decisions"]["resume"],
    )
    if shown["cpu_credits"] is None:
        return text
    return text + CPU_METRICS.format(
        credits=shown["cpu_credits"],
        credits_max=shown["cpu_credits_max"],
        cloudwatch=none_as(shown["cpu_cloudwatch_credits"]),
    )


def none_as(value, missing=-1):
    return missing if value is None else value


def publish(state_dir, shown):
    """The state for shoestring-status, and the same as metrics for the node exporter."""
    write_atomic(state_dir / "state.json", json.dumps(shown))
    write_atomic(state_dir / "metrics" / "shoestring_guard.prom", metrics(shown))


SHARE_SQL = """INSERT INTO core_bulkpause (source, paused, reason, changed_at)
VALUES (:'source', :'paused', :'reason', now())
ON CONFLICT (source) DO UPDATE
SET paused = EXCLUDED.paused, reason = EXCLUDED.reason, changed_at = EXCLUDED.changed_at;
"""


class SharedPause:
    """This host's pause, written where every host's bulk pool reads it (the database), when it
    changes; the last state written is remembered, and one that failed is tried again."""

    def __init__(self, database, role, source, run=subprocess.run):
        self.database = database
        self.role = role
        self.source = source
        self.run = run
        self.written = None

    def describe(self):
        if not self.database:
            return "the pause stays on this host"
        return f"the pause is shared through the {self.database} database as {self.source}"

    def write(self, paused, reason):
        """Write the state unless it is the one last written; True once it is there."""
        if not self.database or self.written == paused:
            return True
        command = [
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.database, "-U", self.role,
            "-v", f"source={self.source}", "-v", f"paused={'true' if paused else 'false'}",
            "-v", f"reason={reason}", "-f", "-",
        ]  # fmt: skip
        try:
            done = self.run(command, input=SHARE_SQL, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as error:
            log(f"guard: could not share the pause through the database: {error}")
            return False
        if done.returncode != 0:
            log(f"guard: could not share the pause through the database: {done.stderr.strip()}")
            return False
        self.written = paused
        return True


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
    cpu = CpuCredits.from_env()
    cpu_cloudwatch = CloudWatchBalance(ENV.get("GUARD_CLOUDWATCH_CPU_FILE", ""), "cpu")
    device = find_device(
        ENV.get("GUARD_DEVICE", ""), ENV.get("GUARD_DATA_PATH", "/var/lib/postgresql")
    )
    state = State.starting(paused=flag.exists())
    shared = SharedPause(
        ENV.get("GUARD_SHARE_DATABASE", ""),
        ENV.get("GUARD_SHARE_ROLE", "shoestring_guard"),
        ENV.get("GUARD_SHARE_SOURCE") or socket.gethostname(),
    )
    t = thresholds
    watching_cpu = (
        f"{cpu.describe()}: pause below {t.cpu_pause_below:g} credits, resume at"
        f" {t.cpu_resume_above:g}; {cpu_cloudwatch.describe()}"
        if cpu
        else "CPU credits not watched"
    )
    log(
        f"guard: watching {device} as {volume.describe()}; pause below {t.pause_below:g}% or "
        f"memory pressure over {t.pressure_pause:g} or swap-ins over {t.swapin_pause:g}/s, resume "
        f"after {t.resume_after:g}s above {t.resume_above:g}% and under {t.pressure_resume:g};"
        f" every {interval:g}s; {cloudwatch.describe()}; {watching_cpu}"
        + f"; {shared.describe()}"
        + ("; bulk work is paused (flag present)" if state.paused else "")
    )
    reason = "paused when the guard started" if state.paused else ""
    shared.write(state.paused, reason)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    rates = Rates(0.0, memory_pressure(), 0.0, 0.0)
    publish(
        state_dir, status(state, "starting", device, volume, cloudwatch, cpu, cpu_cloudwatch, rates)
    )
    last_ios, last_swapin, last_busy = read_diskstats()[device][2], swap_ins(), read_cpu_busy_s()
    last_time = time.monotonic()
    while True:
        time.sleep(interval)
        now = time.monotonic()
        elapsed = now - last_time
        ios, swapin, busy = read_diskstats()[device][2], swap_ins(), read_cpu_busy_s()
        rates = Rates(
            iops=(ios - last_ios) / elapsed,
            pressure=memory_pressure(),
            swapin=(swapin - last_swapin) / elapsed,
            vcpus=(busy - last_busy) / elapsed,
        )
        last_ios, last_swapin, last_busy, last_time = ios, swapin, busy, now
        volume.spend(rates.iops, elapsed)
        cloudwatch.reset(volume)
        if cpu:
            cpu.spend(rates.vcpus, elapsed)
            cpu_cloudwatch.reset(cpu)
        balance = volume.balance_percent()
        numbers = (
            f"burst balance {balance:.1f}% ({volume.credits:.0f} credits), {rates.iops:.0f} IOPS,"
            f" memory pressure {rates.pressure:.2f}, swap-ins {rates.swapin:.1f}/s,"
            f" {rates.vcpus:.2f} vCPU"
            + (f", CPU credits {cpu.credits:.1f}" if cpu else "")
            + cloudwatch.last()
            + (cpu_cloudwatch.last() if cpu else "")
        )
        reading = Reading(
            balance, rates.pressure, rates.swapin, flag.exists(), cpu.credits if cpu else None
        )
        decision = decide(state, reading, thresholds, now)
        state = decision.state
        if decision.flag == "touch":
            flag.touch()
        elif decision.flag == "unlink":
            flag.unlink(missing_ok=True)
        for message in decision.said:
            log(f"{message} ({numbers})")
            reason = f"{message} ({numbers})"
        shared.write(state.paused, reason if state.paused else "")
        publish(
            state_dir,
            status(state, decision.shown, device, volume, cloudwatch, cpu, cpu_cloudwatch, rates),
        )


if __name__ == "__main__":
    sys.exit(main())
