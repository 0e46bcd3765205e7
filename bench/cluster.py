"""make bench-cluster: one workers host against two, under the fake's real per-address limit.

Brings up molecule/cluster's hosts (`molecule create` and `converge -s cluster`, with the
bench's few settings as extra variables), gives each tier host a counted /var
(bench/hosts.sh attach) before converging, and runs the bench agent on the database host
(Postgres on its socket, the pages at the web host's address, the fake at its host's) with
enough people that the per-address budget binds. Phase one: the second workers host's Celery
pools stopped; phase two: both. Each is measured after a warm-up: blocks/s on the fake, its
counters per client address, each host's CPU (its container's cgroup) and write IOs. The hosts
are removed afterwards, also on failure, unless BENCH_KEEP=1.

    python -m bench.cluster [--people 150] [--measure-s 240] [--warmup-s 120]
    BENCH_REUSE=1 BENCH_KEEP=1 python -m bench.cluster   # hosts already converged, kept

Writes bench/results/<date>-<commit>-cluster/ (summary.md and summary.json kept in git) and
replaces docs/benchmarks.md's latest cluster table (bench/docs.py).
"""

import argparse
import datetime
import gzip
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from . import analysis, cluster_figures, docs, run
from .agent import host

REPO = run.REPO
DOCS = run.DOCS
SECTION = "latest-cluster"
PREFIX = os.environ.get("SHOESTRING_MOLECULE_PREFIX") or "shoestring-molecule"
NET = os.environ.get("SHOESTRING_CLUSTER_NET") or "172.30.57"
# molecule/cluster's hosts and their addresses on the scenario's network.
OCTETS = {"db": 10, "web": 11, "worker-a": 12, "worker-b": 13, "fake": 20}
HOSTS = {tier: f"{PREFIX}-cluster-{tier}" for tier in OCTETS}
ADDRESSES = {f"{NET}.{octet}": tier for tier, octet in OCTETS.items()}
TIERS = ("db", "web", "worker-a", "worker-b")
# What the bench needs beyond the scenario's own variables (as inventory/bench's hosts):
# the guard's CPU credit model reads the build machine's /proc/stat in a container; the
# token bucket is a per-person policy, not what is measured; the agent on the database host
# reaches the pages at the web host's address, and signs its people up from there (nginx
# limits sign-in forms per address but loopback's).
EXTRA_VARS = {
    "nginx_signin_per_minute": 100000,
    "nginx_signin_burst": 1000,
    "guard_cpu_credits": False,
    "app_token_bucket_capacity": 1000000,
    "nginx_extra_names": [f"{NET}.11"],
}
# The fake's host: its 1 GiB in the scenario, plus the fake's in-memory records (about
# 1.1 KiB a block). molecule/cluster's prepare.yml installs the fake there with the role's
# default MemoryMax of 256 MiB, which extra variables of converge do not reach: a first run
# lost the fake's state to the OOM killer at 210,000 blocks. Raised at run time instead.
FAKE_MEMORY = "4096m"
FAKE_UNIT_MEMORY = "3G"
POOLS = "shoestring-worker-*.service"
log = run.log


def molecule(step, out, *ansible_args):
    """One molecule step on the cluster scenario, its output appended to the run's log."""
    env = dict(os.environ, SHOESTRING_MOLECULE_PREFIX=PREFIX, SHOESTRING_CLUSTER_NET=NET)
    command = ["molecule", step, "-s", "cluster", *(["--", *ansible_args] if ansible_args else [])]
    with open(out / "provision-cluster.log", "a") as log_file:
        status = subprocess.run(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=5400
        ).returncode
    if status != 0:
        raise RuntimeError(f"molecule {step} -s cluster failed: see {out}/provision-cluster.log")


def release(names):
    """Remove what the run made: the containers (molecule destroy) and the counted /vars."""
    run.run_command(str(run.HOSTS_SH), "down", *names)


def build(out):
    started = time.monotonic()
    molecule("destroy", out)
    molecule("create", out)
    run.run_command(
        "docker", "update", "--memory", FAKE_MEMORY, "--memory-swap", FAKE_MEMORY, HOSTS["fake"]
    )
    run.run_command(str(run.HOSTS_SH), "attach", *(HOSTS[t] for t in TIERS))
    run.run_command(
        "docker", "exec", HOSTS["fake"], "systemctl", "set-property", "--runtime",
        "fakesky.service", f"MemoryMax={FAKE_UNIT_MEMORY}",
    )  # fmt: skip
    log(f"created in {time.monotonic() - started:.0f} s; converging")
    molecule("converge", out, "-e", json.dumps(EXTRA_VARS))
    log(f"built in {time.monotonic() - started:.0f} s")
    return time.monotonic() - started


def cgroup_file(name, controller, filename):
    container = run.run_command(
        "docker", "inspect", "-f", "{{.Id}}", name, capture_output=True
    ).stdout.strip()
    for parent in ("docker", "system.slice"):
        for leaf in (container, f"docker-{container}.scope"):
            path = Path("/sys/fs/cgroup") / controller / parent / leaf / filename
            if path.exists():
                return path
    raise RuntimeError(f"no {controller} cgroup for {name}")


class Snapshots:
    """Each host's CPU (its container's cpuacct.usage) and each tier host's counted /var's
    completed reads and writes, read on the build machine; and which other containers run."""

    def __init__(self):
        self.cpu = {
            tier: cgroup_file(name, "cpuacct", "cpuacct.usage") for tier, name in HOSTS.items()
        }
        self.memory = {
            tier: cgroup_file(name, "memory", "memory.failcnt").parent
            for tier, name in HOSTS.items()
        }
        # The fake's host is the network, not the appliance: its CPU only, no counted /var.
        self.devices = {tier: counted_var(HOSTS[tier]) if tier in TIERS else None for tier in HOSTS}

    def take(self):
        # The loop devices are the build machine's: its /proc/diskstats counts them.
        stats = host.diskstats([d for d in self.devices.values() if d])
        hosts = {}
        for tier in HOSTS:
            disk = stats.get(self.devices[tier]) or {}
            memory = self.memory[tier]
            hosts[tier] = {
                "cpu_ns": int(self.cpu[tier].read_text()),
                "memory_peak": read_int(memory / "memory.max_usage_in_bytes"),
                "memory_failcnt": read_int(memory / "memory.failcnt"),
                "write_ios": disk.get("writes"),
                "read_ios": disk.get("reads"),
            }
        return {
            "t": time.time(),
            "hosts": hosts,
            "others": others(),
            "load_average": run.load_average(),
        }


def counted_var(name):
    """The loop device of the host's counted /var; None when it has none (a reused host
    converged without `hosts.sh attach`: its writes are not counted, the report says n/a)."""
    try:
        return run.devices(name).get("/var")
    except RuntimeError:
        return None


def read_int(path):
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def others():
    """Containers running on the machine that are not this run's hosts."""
    names = run.run_command("docker", "ps", "--format", "{{.Names}}", capture_output=True).stdout
    return sorted(set(names.split()) - set(HOSTS.values()))


def pools(tier, action):
    """Stop or start the host's Celery pools, by name (a glob reaches loaded units only)."""
    listing = ["docker", "exec", HOSTS[tier], "systemctl", "list-units", "--all", "--no-legend"]
    units = run.run_command(*listing, "--plain", POOLS, capture_output=True).stdout.split("\n")
    names = [line.split()[0] for line in units if line.strip()]
    if not names:
        raise RuntimeError(f"{HOSTS[tier]} has no {POOLS}")
    run.run_command("docker", "exec", HOSTS[tier], "systemctl", action, *names)
    states = subprocess.run(
        ["docker", "exec", HOSTS[tier], "systemctl", "is-active", *names],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    log(f"{tier}: {action}: {', '.join(f'{n} {s}' for n, s in zip(names, states, strict=False))}")


def parse(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--people", type=int, default=int(env("BENCH_PEOPLE_CLUSTER", "150")))
    parser.add_argument("--compression", default=env("BENCH_COMPRESSION", "auto"))
    parser.add_argument("--warmup-s", type=float, default=90)
    parser.add_argument("--warmup-two-s", type=float, default=50)
    parser.add_argument("--measure-s", type=float, default=200)
    parser.add_argument("--seed", type=int, default=int(env("BENCH_SEED", "1")))
    parser.add_argument("--keep", action="store_true", default=env("BENCH_KEEP") == "1")
    parser.add_argument("--reuse", action="store_true", default=env("BENCH_REUSE") == "1")
    args = parser.parse_args(argv)
    if args.compression == "auto":
        # Both addresses' budgets must bind: the people's hourly budgets offer 1.4x two hosts'.
        args.compression = run.auto_compression(
            args.people, target=2 * analysis.TARGET_BLOCKS_PER_S
        )
    args.compression = float(args.compression)
    return args


def agent_arguments(args, seconds):
    return [
        "run", "--no-broker",
        "--run-id", f"k{int(time.time()) % 100000}",
        "--seconds", str(seconds),
        "--people", str(args.people),
        "--compression", str(args.compression),
        "--seed", str(args.seed),
        "--idle-s", "5",
        "--stagger-s", str(min(60, args.warmup_s / 2)),
    ]  # fmt: skip


def measure(args, out, meta):
    """The load on the running hosts, its two phases, and each phase's snapshots."""
    snapshots = Snapshots()
    pools("worker-b", "stop")
    load_started = threading.Event()
    seconds = args.warmup_s + args.measure_s + args.warmup_two_s + args.measure_s + 5

    def on_record(record):
        if record.get("type") == "sample" and record.get("phase") == "load":
            load_started.set()

    result = {}

    def load():
        try:
            run.install_agent(HOSTS["db"])
            result["stream"] = run.agent(
                HOSTS["db"],
                agent_arguments(args, seconds),
                out / "raw-cluster.jsonl.gz",
                timeout=seconds + 1800,
                env={"BENCH_FAKE_HOST": f"{NET}.20", "BENCH_WEB_HOST": f"{NET}.11"},
                on_record=on_record,
            )
        except Exception as error:  # reported by the main thread
            result["error"] = error
            load_started.set()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    if not load_started.wait(1800) or "error" in result:
        raise RuntimeError(f"the load did not start: {result.get('error')}")
    t0 = time.time()
    marks = {}

    def at(offset, name):
        time.sleep(max(0.0, t0 + offset - time.time()))
        marks[name] = snapshots.take()
        # Kept as they come: a load that fails later still leaves its phases' snapshots.
        with gzip.open(out / "raw-snapshots.jsonl.gz", "at") as kept:
            kept.write(json.dumps({"mark": name, **marks[name]}) + "\n")
        log(f"{name}: others running: {marks[name]['others'] or 'none'}")

    log("phase one: worker-a alone")
    at(args.warmup_s, "one-start")
    at(args.warmup_s + args.measure_s, "one-end")
    pools("worker-b", "start")
    two = args.warmup_s + args.measure_s + args.warmup_two_s
    log("phase two: worker-a and worker-b")
    at(two, "two-start")
    at(two + args.measure_s, "two-end")
    thread.join(timeout=seconds + 1800)
    # The fake keeps its records in memory: a restart during the load loses them.
    meta["fake_unit"] = subprocess.run(
        ["docker", "exec", HOSTS["fake"], "systemctl", "show", "fakesky.service",
         "-p", "NRestarts,Result,MemoryCurrent"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    log(f"the fake's unit at the end: {meta['fake_unit']}")
    if "error" in result or "stream" not in result:
        raise RuntimeError(f"the agent failed: {result.get('error', 'it ran over its time')}")
    return result["stream"], marks


def main(argv=None):
    args = parse(argv)
    docs.check(DOCS, [SECTION])
    started = time.monotonic()
    out = run.results_dir("cluster", smoke=False)
    log(f"results in {out}")
    meta = {
        "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
        "commit": run.commit(),
        "people": args.people,
        "compression": args.compression,
        "warmup_s": args.warmup_s,
        "warmup_two_s": args.warmup_two_s,
        "measure_s": args.measure_s,
        "machine": run.machine(),
        "load_before": run.load_average(),
        "others_before": others(),
        "results_dir": out.relative_to(REPO),
    }
    names = [HOSTS[t] for t in HOSTS]
    try:
        if not args.reuse:
            meta["build_s"] = round(build(out))
        stream, marks = measure(args, out, meta)
    finally:
        if not args.keep:
            try:
                molecule("destroy", out)
            finally:
                release(names)
    meta["load_after"] = run.load_average()
    start = next(r for r in stream if r.get("type") == "start")
    settings = start.get("fake_settings", {})
    meta["per_ip_rps"] = analysis.ip_rate(settings)
    samples = [r for r in stream if r.get("type") == "sample"]
    load = analysis.phase(samples, "load")
    meta["agent_cpu_s"] = load[-1]["agent_cpu_s"] - load[0]["agent_cpu_s"] if load else None
    phases = {
        "one workers host": cluster_figures.phase_figures(
            samples, marks["one-start"], marks["one-end"], ADDRESSES, settings
        ),
        "two workers hosts": cluster_figures.phase_figures(
            samples, marks["two-start"], marks["two-end"], ADDRESSES, settings
        ),
    }
    meta["others"] = ", ".join(sorted({o for m in marks.values() for o in m["others"]})) or "none"
    measured = cluster_figures.ratio(*phases.values())
    meta["wall_s"] = round(time.monotonic() - started)
    summary = cluster_figures.summary_markdown(meta, phases, measured)
    (out / "summary.md").write_text(summary)
    kept = {"meta": meta, "phases": phases, "ratio": measured, "marks": marks}
    (out / "summary.json").write_text(json.dumps(kept, indent=1, default=str))
    print(summary)
    link = docs.link(meta["results_dir"], "summary.md")
    docs.update(
        DOCS,
        {SECTION: f"{summary.rstrip()}\n\nThis table: {link}."},
        f"- {meta['date']} commit {meta['commit']}: two workers hosts against one;"
        f" {_rate(phases)}: {link}",
    )
    log(f"bench-cluster: {meta['wall_s']} s in all")
    return phases


def _rate(phases):
    one, two = phases.values()
    return (
        f"{one['blocks_per_s']:,.1f} and {two['blocks_per_s']:,.1f} blocks/s,"
        f" {cluster_figures.ratio(one, two) or 0:.2f}x"
    )


if __name__ == "__main__":
    main()
