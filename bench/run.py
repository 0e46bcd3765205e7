"""make bench: the appliance as shipped (tuned) against the seed's naive stack, under the
same load, one after the other, in one run. Builds both hosts (bench/hosts.sh + site.yml),
runs the agent in each, and writes bench/results/<date>-<commit>/: the raw samples, a
per-second CSV, a plot and a Markdown summary. Only summary.md and summary.json are kept in
git (.gitignore); the run's table replaces the latest one in docs/benchmarks.md and its
summary heads the list of runs there (bench/docs.py).

    python -m bench.run [--minutes 10] [--people 50] [--iops 100] [--compression auto]
    python -m bench.run --calibrate      # the issue's calibration point (docs/benchmarks.md)
    python -m bench.run --smoke          # 60 s, small load, results in a temporary directory

Settings default from BENCH_MINUTES, BENCH_PEOPLE, BENCH_IOPS, BENCH_COMPRESSION.
"""

import argparse
import datetime
import gzip
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from . import analysis, docs, report

REPO = Path(__file__).resolve().parents[1]
HOSTS_SH = REPO / "bench" / "hosts.sh"
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "benchmarks.md"
# The sections of DOCS a run replaces (bench/docs.py): a calibration run, any other.
HEADLINE, CALIBRATION = "latest-headline", "latest-calibration"
# Container names: <prefix>-bench-<role>, so checkouts sharing a machine do not collide.
# The inventory host stays shoestring-bench-<role> (its host_vars); ansible_host is the name.
PREFIX = os.environ.get("SHOESTRING_BENCH_PREFIX") or "shoestring"
HOSTS = {role: f"{PREFIX}-bench-{role}" for role in ("tuned", "naive")}
AGENT_HOME = "/opt/shoestring-bench"
# Bluesky's hourly budget per account: 5,000 write points, 3 a block.
BLOCKS_PER_ACCOUNT_HOUR = 5000 / 3


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def auto_compression(people, target=analysis.TARGET_BLOCKS_PER_S, headroom=1.4):
    """The factor by which the per-account windows shrink so that the people's hourly write
    budgets together offer `headroom` x the target rate: 14 for 130 people, who then ask for
    about 843 blocks/s, what 1,820 people at Bluesky's limits ask for. A daily budget lasts
    seven hourly ones: at 14, 30 minutes, the headline run's length, so the load holds for
    the whole run (fewer people need a larger factor, and their daily budgets then end
    before the run does)."""
    accounts_needed = headroom * target * 3600 / BLOCKS_PER_ACCOUNT_HOUR
    return max(1, math.ceil(accounts_needed / max(1, people)))


def run_command(*command, **options):
    return subprocess.run(command, check=True, text=True, **options)


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return (
        f"{os.cpu_count()} x {model}, {total_kib / 2**20:.0f} GiB RAM, Linux {platform.release()}"
    )


def load_average():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def commit():
    head = run_command("git", "-C", str(REPO), "rev-parse", "--short", "HEAD", capture_output=True)
    dirty = run_command(
        "git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", capture_output=True
    )
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def results_dir(label, smoke):
    if smoke:
        return Path(tempfile.mkdtemp(prefix="shoestring-bench-smoke-"))
    base = f"{datetime.date.today():%Y-%m-%d}-{commit()}" + (f"-{label}" if label else "")
    path, n = RESULTS / base, 1
    while path.exists():
        n += 1
        path = RESULTS / f"{base}-{n}"
    path.mkdir(parents=True)
    return path


# -- the hosts ---------------------------------------------------------------------------
def provision(names, out_dir):
    """site.yml on the hosts (at once, if several), each with its own inventory
    (inventory/bench/<role>.yml: each is a whole appliance)."""
    processes = {}
    for name in names:
        role = next(k for k, v in HOSTS.items() if v == name)
        log_file = open(out_dir / f"provision-{role}.log", "w")  # noqa: SIM115
        # The inventory names the host shoestring-bench-<role>; the container is `name`.
        command = ["ansible-playbook", "-i", f"inventory/bench/{role}.yml", "site.yml"]
        command += ["-e", f"ansible_host={name}"]
        processes[name] = (
            subprocess.Popen(
                command,
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"),
            ),
            log_file,
        )
    failed = []
    for name, (process, log_file) in processes.items():
        if process.wait(timeout=3600) != 0:
            failed.append(name)
        log_file.close()
    if failed:
        raise RuntimeError(f"site.yml failed on {', '.join(failed)}: see {out_dir}/provision-*.log")


@contextmanager
def bench_hosts(names, out_dir, split_pgdata, keep, reuse):
    """The hosts, built fresh (unless reused) and removed afterwards (unless kept), also
    when anything fails."""
    try:
        if not reuse:
            run_command(str(HOSTS_SH), "down", *names)
            run_command(str(HOSTS_SH), "up", *names, *(["--split-pgdata"] if split_pgdata else []))
            started = time.monotonic()
            log(f"provisioning {', '.join(names)} with site.yml")
            provision(names, out_dir)
            log(f"provisioned in {time.monotonic() - started:.0f} s")
        yield
    finally:
        if not keep:
            run_command(str(HOSTS_SH), "down", *names)


def devices(name):
    out = run_command(str(HOSTS_SH), "devices", name, capture_output=True).stdout
    pairs = [line.split() for line in out.splitlines() if line.strip()]
    if not pairs:
        raise RuntimeError(f"{name} has no counted loop device (is it a bench host?)")
    return {mount: device for mount, device in pairs}


def install_agent(name):
    """Copy bench/agent into the host (its root disk, not the counted /var)."""
    run_command("docker", "exec", name, "mkdir", "-p", AGENT_HOME)
    tar = subprocess.Popen(
        ["tar", "-C", str(REPO / "bench"), "--exclude", "__pycache__", "-cf", "-", "agent"],
        stdout=subprocess.PIPE,
    )
    run_command("docker", "exec", "-i", name, "tar", "-C", AGENT_HOME, "-xf", "-", stdin=tar.stdout)
    tar.wait()


def batch_size(name):
    """The accounts one batch blocks in one applyWrites call on the host, read with the
    agent's reader of the app's settings files; None if it cannot be read."""
    command = [
        "docker", "exec", "-w", AGENT_HOME, name, "python3", "-c",
        "from agent.host import env_setting;"
        " print(env_setting('SHOESTRING_BLOCK_BATCH_SIZE') or '')",
    ]  # fmt: skip
    try:
        return int(run_command(*command, capture_output=True).stdout.strip())
    except (subprocess.CalledProcessError, ValueError):
        return None


def agent(name, arguments, raw_path, timeout, env=None, on_record=None):
    """Run the agent in the host, with `env` in its environment; returns its records (also
    saved, gzipped, to raw_path), each handed to `on_record` as it comes."""
    variables = [
        f"{key}={value}" for key, value in {"PYTHONDONTWRITEBYTECODE": 1, **(env or {})}.items()
    ]
    command = [
        "docker", "exec", "-w", AGENT_HOME, *(f for v in variables for f in ("-e", v)), name,
        "python3", "-m", "agent", *arguments,
    ]  # fmt: skip
    records = []
    with gzip.open(raw_path, "wt") as raw, open(raw_path.with_suffix(".log"), "w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        deadline = time.monotonic() + timeout
        for line in process.stdout:
            raw.write(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            records.append(record)
            if on_record is not None:
                on_record(record)
            if record.get("type") in (
                "prepared", "end", "fault-load", "fault-result", "first-pass", "watch-result"
            ):  # fmt: skip
                log(f"{name}: {record['type']}")
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the agent in {name} ran over {timeout:.0f} s")
        if process.wait() != 0:
            tail = raw_path.with_suffix(".log").read_text()[-2000:]
            raise RuntimeError(f"the agent in {name} failed:\n{tail}")
    return records


# -- one run -----------------------------------------------------------------------------
def parse(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(env("BENCH_MINUTES", "10")))
    parser.add_argument("--people", type=int, default=int(env("BENCH_PEOPLE", "130")))
    parser.add_argument("--iops", type=int, default=int(env("BENCH_IOPS", "100")))
    parser.add_argument(
        "--compression",
        default=env("BENCH_COMPRESSION", "auto"),
        help="per-account window compression; auto: the hourly budgets offer 1.4x the target rate",
    )
    parser.add_argument("--clickers", type=int, default=3)
    parser.add_argument("--click-every-s", type=float, default=3)
    parser.add_argument("--read-every-s", type=float, default=2)
    parser.add_argument("--hosts", default="tuned,naive", help="measured in this order")
    parser.add_argument("--seed", type=int, default=int(env("BENCH_SEED", "1")))
    parser.add_argument("--smoke", action="store_true", help="60 s, 4 people, no docs")
    parser.add_argument("--calibrate", action="store_true", help="the calibration point")
    parser.add_argument(
        "--keep",
        action="store_true",
        default=env("BENCH_KEEP") == "1",
        help="leave the last host measured running (make bench-smoke's faults reuse it)",
    )
    parser.add_argument("--reuse", action="store_true", default=env("BENCH_REUSE") == "1")
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes, args.people = min(args.minutes, 1.0), min(args.people, 4)
    if args.compression == "auto":
        args.compression = auto_compression(args.people)
    args.compression = float(args.compression)
    return args


def agent_arguments(args, role, host_devices):
    seconds = args.minutes * 60
    common = [
        "run",
        "--devices", ",".join(f"{m}={d}" for m, d in host_devices.items()),
        "--run-id", f"{role[0]}{int(time.time()) % 100000}",
        "--seconds", str(seconds),
    ]  # fmt: skip
    if args.calibrate:
        return [
            *common,
            "--people", "1", "--clickers", "0", "--read-every-s", "0",
            "--targets", "crowd-5000.fake.test", "--lift-limits", "--until-done",
            "--idle-s", "5", "--stagger-s", "0",
        ]  # fmt: skip
    return [
        *common,
        "--people", str(args.people),
        "--clickers", str(args.clickers),
        "--click-every-s", str(args.click_every_s),
        "--read-every-s", str(args.read_every_s),
        "--compression", str(args.compression),
        "--seed", str(args.seed),
        "--idle-s", "10" if args.smoke else "15",
        # Starts spread over one compressed hour, so people's hourly windows do not drain and
        # refill together; at most a tenth of a short run.
        "--stagger-s", str(min(3600 / args.compression, seconds / 10 if args.smoke else seconds)),
    ]  # fmt: skip


def fake_note(args, settings, missing):
    if args.calibrate:
        return "The fake's limits are lifted (the calibration point)."
    hour = 3600 / args.compression
    day = 86400 / args.compression
    note = (
        f"Time compression {args.compression:g}: each person's hourly and daily write windows"
        f" last {hour:,.0f} s and {day:,.0f} s instead of an hour and a day, so {args.people}"
        f" people ask for what {args.people * args.compression:,.0f} people would at Bluesky's"
        f" limits; the per-IP window stays real (5 minutes). Blocks/s, IOPS and latencies are"
        f" wall-clock rates and need no scaling; a person's own rate divided by"
        f" {args.compression:g} is their rate in real time."
    )
    if missing:
        note += (
            f" This fake lacks the settings {', '.join(missing)}: those limits were not compressed."
        )
    if "ip_requests_per_window" not in settings:
        note += " This fake enforces no per-IP limit yet (the fake-network issue adds it)."
    return note


# Units the appliance runs, by name prefix (a Postgres or Celery unit's suffix may change).
APPLIANCE_UNITS = (
    "postgresql",
    "redis",
    "nginx",
    "shoestring-web",
    "shoestring-worker-interactive",
    "shoestring-worker-bulk",
    "shoestring-worker-maintenance",
    "shoestring-beat",
)


def unmeasured(f, counted_device=True):
    """What one host's run failed to measure, whatever the numbers: a harness that stopped
    counting, sampling or loading shows here. Without a counted device no writes are."""
    checks = {
        "at least 50 samples under load": f["samples"] >= 50,
        "blocks made": f["blocks"] > 0,
        "writes counted on the loop device": f["write_ios"] > 0 or not counted_device,
        "WAL counted": f["wal_bytes"] > 0,
        "the appliance's CPU counted": f["appliance_cpu_s"] > 0,
        "every appliance service sampled": all(
            any(unit.startswith(prefix) for unit in f["services"]) for prefix in APPLIANCE_UNITS
        ),
        "single-account blocks timed": f["clicks"]["count"] > 0,
        "campaign page timed": f["campaign_page"]["count"] > 0,
        "the broker sampled every second": f["broker_samples_missing"] == 0,
    }
    if not counted_device:
        checks.pop("at least 50 samples under load")
        checks["samples under load"] = f["samples"] >= 5
    return [name for name, ok in checks.items() if not ok]


def smoke_problems(figures, out):
    """What a smoke run must have measured (see unmeasured), and its plot and summary."""
    problems = [f"{role}: {name}" for role, f in figures.items() for name in unmeasured(f)]
    problems += [
        f"{name} not written" for name in ("plot.png", "summary.md") if not (out / name).exists()
    ]
    return problems


def write_summary(out, meta, figures, verdict_rows, ratio, ceiling):
    """What git keeps of a run: summary.md and summary.json in its directory; returns the
    Markdown."""
    summary = report.summary_markdown(meta, figures, verdict_rows, ratio, ceiling)
    (out / "summary.md").write_text(summary)
    kept = {"meta": meta, "figures": figures, "targets": verdict_rows, "ratio": ratio}
    kept["ceiling"] = ceiling
    (out / "summary.json").write_text(json.dumps(kept, indent=1, default=str))
    return summary


def update_docs(path, meta, figures, verdict_rows, ratio, ceiling):
    """docs/benchmarks.md after a run: its latest table of that kind, its line in the list."""
    docs.update(
        path,
        docs_sections(meta, figures, verdict_rows, ratio, ceiling),
        run_entry(meta, figures, ratio),
    )


def docs_sections(meta, figures, verdict_rows, ratio, ceiling):
    """What a run puts in docs/benchmarks.md: a calibration run its calibration lines, any
    other its summary without the rows per service; each links the whole summary."""
    summary = docs.link(meta["results_dir"], "summary.md")
    if meta["calibration"]:
        lines = [f"Latest: {meta['date']}, commit {meta['commit']} ({summary}).", ""]
        lines += report.calibration_lines(figures)[2:]
        if ratio:
            lines += [
                "",
                f"Naive/tuned write IOs per block (incl. the flush): **{report._fmt(ratio)}x**.",
            ]
        return {CALIBRATION: "\n".join(lines)}
    if set(figures) != {"tuned", "naive"}:
        return {}  # a run of one host is listed, it does not replace the comparison
    text = report.summary_markdown(meta, figures, verdict_rows, ratio, ceiling, services=False)
    return {HEADLINE: f"{text.rstrip()}\n\nEvery service's memory and CPU: {summary}."}


def run_entry(meta, figures, ratio):
    """The run's line in docs/benchmarks.md's list of runs."""
    if meta["calibration"]:
        what = "the calibration point"
    else:
        what = f"{meta['minutes']:g} min, {report._people(meta['people'])}"
    if "tuned" in figures:
        what += f"; tuned {report._fmt(figures['tuned']['blocks_per_s'])} blocks/s"
    if ratio:
        what += f", naive/tuned {report._fmt(ratio)}x write IOs per block"
    summary = docs.link(meta["results_dir"], "summary.md")
    return f"- {meta['date']} commit {meta['commit']}: {what}: {summary}"


def main(argv=None):
    args = parse(argv)
    if not args.smoke:
        docs.check(DOCS, [CALIBRATION if args.calibrate else HEADLINE])
    roles = [r.strip() for r in args.hosts.split(",") if r.strip()]
    names = [HOSTS[r] for r in roles]
    label = "calibration" if args.calibrate else ""
    out = results_dir(label, args.smoke)
    log(f"results in {out}")
    meta = {
        "date": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
        "commit": commit(),
        "minutes": args.minutes,
        "people": 1 if args.calibrate else args.people,
        "clickers": 0 if args.calibrate else args.clickers,
        "click_every_s": args.click_every_s,
        "read_every_s": args.read_every_s,
        "iops": args.iops,
        "compression": args.compression,
        "machine": machine(),
        "load_before": load_average(),
        "split_pgdata": args.calibrate,
        "calibration": args.calibrate,
        "results_dir": out.relative_to(REPO) if out.is_relative_to(REPO) else out,
    }
    streams, batch_sizes = {}, {}
    # One host at a time (built, measured, removed): the other takes no CPU or memory
    # meanwhile, and a shared build machine runs one bench container, not two.
    for role, name in zip(roles, names, strict=True):
        last = name == names[-1]
        with bench_hosts([name], out, args.calibrate, args.keep and last, args.reuse):
            install_agent(name)
            host_devices = devices(name)
            log(f"{role}: load for {args.minutes:g} min on {name} (counted: {host_devices})")
            streams[role] = agent(
                name,
                agent_arguments(args, role, host_devices),
                out / f"raw-{role}.jsonl.gz",
                timeout=args.minutes * 60 + 3600,
            )
            batch_sizes[role] = batch_size(name)
    meta["load_after"] = load_average()
    figures = {
        role: analysis.summarize(stream, args.iops, args.compression, batch_sizes[role])
        for role, stream in streams.items()
    }
    start = next(r for r in streams[roles[0]] if r.get("type") == "start")
    meta["fake_note"] = fake_note(
        args, start.get("fake_settings", {}), start.get("fake_missing", [])
    )
    rows = {role: report.series(stream, args.iops) for role, stream in streams.items()}
    for role, host_rows in rows.items():
        report.write_csv(out / f"seconds-{role}.csv", host_rows)
    report.plot(
        out / "plot.png", rows, args.iops, f"Shoestring bench {meta['date']} ({meta['commit']})"
    )
    verdict_rows, ratio = (
        analysis.verdicts(figures["tuned"], figures.get("naive"))
        if "tuned" in figures
        else ([], None)
    )
    tuned = figures.get("tuned", {})
    ceiling = analysis.ceiling_figures(
        start.get("fake_settings", {}), tuned.get("blocks_per_s", 0), tuned.get("batch_size")
    )
    summary = write_summary(out, meta, figures, verdict_rows, ratio, ceiling)
    print(summary)
    if not args.smoke:
        update_docs(DOCS, meta, figures, verdict_rows, ratio, ceiling)
    if args.smoke:
        problems = smoke_problems(figures, out)
        if problems:
            raise SystemExit("bench smoke: " + "; ".join(problems))
        log("smoke: every figure was measured")
    return figures


if __name__ == "__main__":
    main()
