"""make test's share of the benchmark: a short load from the benchmark's own agent
(bench/agent) on this converged host, so the harness never rots between `make bench` runs.

Two people block the followers of one 2,000-follower account through the pages while a
third clicks single-account blocks and a reader loads the campaign page, until every
campaign is done (at most 90 s). The figures are printed, never judged: this host is not a
bench host (no counted loop device, so no write IOs; CPUs shared with the rest of CI). The
test fails only when something was not measured: no blocks, no WAL, a service not sampled,
the broker not read, a page or a click not timed, a block made twice.

Then the same load on the seed's naive stack (make bench's other host), made from this host
by site.yml with the naive host's inventory variables: the last test of the scenario.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shoestring_host import REPROVISIONED_MARK, broker_is_redis

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from bench import analysis  # noqa: E402
from bench.agent.fake import target_handle  # noqa: E402
from bench.run import AGENT_HOME, APPLIANCE_UNITS, install_agent, unmeasured  # noqa: E402

LOAD_S = 90
NAIVE_VARS = REPO / "inventory/bench/host_vars/shoestring-bench-naive.yml"
SMOKES = {}  # label -> figures, so the naive run can print its ratio to the tuned one


@pytest.fixture
def agent_in_host(host):
    """bench/agent copied onto the host's root disk, as make bench does; removed afterwards."""
    name = host.backend.get_hostname()
    install_agent(name)
    yield name
    subprocess.run(["docker", "exec", name, "rm", "-rf", AGENT_HOME], check=False)


def _ms(seconds):
    return "n/a" if seconds is None else f"{seconds * 1000:.0f}"


def figures_line(f):
    services = ", ".join(
        f"{unit} {s['end_mib']:.0f}"
        for unit, s in sorted(f["services"].items())
        if unit.startswith(APPLIANCE_UNITS) and s.get("end_mib") is not None
    )
    wal = f["wal_bytes_per_block"]
    clicks, page = f["clicks"], f["campaign_page"]
    return (
        f"bench smoke on the Molecule host ({f['seconds']:.0f} s of load): "
        f"{f['blocks']:,} blocks ({f['blocks_per_s']:.1f}/s), "
        f"WAL {'n/a' if wal is None else f'{wal:.0f}'} bytes/block, "
        f"single block click to record p50/p99 {_ms(clicks['p50_s'])}/{_ms(clicks['p99_s'])} ms"
        f" (n={clicks['count']}, failed {clicks['failed']}), "
        f"campaign page p50/p99 {_ms(page['p50_s'])}/{_ms(page['p99_s'])} ms, "
        f"broker depth max {f['broker_depth_max']}, held by workers max "
        f"{f['broker_unacked_max']}; RSS MiB at the end: {services}"
    )


def smoke(agent_in_host, label, capsys):
    """The short load; its figures, printed and checked for anything not measured."""
    started = time.monotonic()
    docker = ["docker", "exec", "-w", AGENT_HOME, "-e", "PYTHONDONTWRITEBYTECODE=1"]
    run_id = f"m{int(time.time()) % 100000}"
    load = f"--people 2 --clickers 1 --click-every-s 3 --read-every-s 2 --seconds {LOAD_S}"
    load += " --idle-s 3 --flush-s 2 --stagger-s 0 --until-done"
    agent = ["python3", "-m", "agent", "run", "--devices", "", "--run-id", run_id]
    agent += ["--targets", target_handle("benchsmoke", 2000), *load.split()]
    result = subprocess.run(
        [*docker, agent_in_host, *agent],
        capture_output=True,
        text=True,
        timeout=LOAD_S + 120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    f = analysis.summarize(records, baseline_iops=100, compression=1.0)
    with capsys.disabled():
        print(f"\n{label}: {figures_line(f)} (wall {time.monotonic() - started:.0f} s)")
    missing = unmeasured(f, counted_device=False)
    if f["duplicates"]:
        missing.append(f"{f['duplicates']} blocks made twice")
    assert not missing, f"not measured: {missing}; {figures_line(f)}"
    SMOKES[label] = f
    return f


def test_a_short_load_from_the_bench_agent_is_measured(host, fake_bluesky, agent_in_host, capsys):
    if not broker_is_redis(host):
        pytest.skip("the agent's broker probe reads Redis; this host's broker is SQS")
    smoke(agent_in_host, "tuned", capsys)


def test_after_the_load_every_service_stays_under_its_memory_high(host, capsys):
    """Memory shares come from measured need (roles/memory_budget): after the load, every
    budgeted service's peak resident memory in the smoke's samples (anonymous plus mapped,
    each second) is under its MemoryHigh, where a cgroup-v2 kernel throttles and reclaims.
    Each is printed as a share of its MemoryMax; the plan aims at 75% at most."""
    tuned = SMOKES.get("tuned")
    if tuned is None:
        pytest.skip("no tuned load ran on this host (its broker is SQS)")
    lines, over = [], []
    for dropin in host.check_output("ls /etc/systemd/system/*.d/memory.conf").split():
        unit = dropin.split("/")[-2].removesuffix(".d")
        sampled = tuned["services"].get(unit.removesuffix(".service"))
        if not sampled or sampled.get("peak_mib") is None:
            continue  # not running during the load (the nightly backup)
        high, top = (
            int(host.check_output("systemctl show -P %s %s", limit, unit)) / 2**20
            for limit in ("MemoryHigh", "MemoryMax")
        )
        peak, end = sampled["peak_mib"], sampled["end_mib"]
        lines.append(
            f"  {unit}: peak {peak:.0f} MiB, end {end:.0f} ({100 * end / top:.0f}% of MemoryMax"
            f" {top:.0f}), MemoryHigh {high:.0f}"
        )
        if peak > high:
            over.append(f"{unit} peaked at {peak:.0f} MiB over its MemoryHigh {high:.0f}")
    with capsys.disabled():
        print("\nmemory after the load:\n" + "\n".join(lines))
    assert lines, "no budgeted service was sampled"
    assert not over, over


@pytest.mark.reprovisions
def test_the_seeds_naive_stack_made_by_inventory_alone_is_measured_the_same_way(
    host, site, fake_bluesky, agent_in_host, capsys
):
    """make bench's second host, in make test: site.yml again with the naive host's
    inventory variables (inventory/bench/host_vars), then the same short load. Runs last
    (conftest): the host is the seed's stack afterwards, and the next verify run's first
    test puts it back (conftest's host_as_converged reads the mark this leaves)."""
    if not broker_is_redis(host):
        pytest.skip("the naive stack's broker is Redis with appendfsync always")
    mark = host.run("install -D -m 0644 /dev/null %s", REPROVISIONED_MARK)
    assert mark.rc == 0, mark.stderr
    took, _ = site("site.yml", "-e", f"@{NAIVE_VARS}")
    with capsys.disabled():
        print(f"\nsite.yml with the naive host's variables: {took:.0f} s")
    # Each of the naive host's choices is in effect.
    sync = host.run("runuser -u postgres -- psql -Atc 'SHOW synchronous_commit'")
    assert sync.stdout.strip() == "on", sync.stderr
    assert host.file("/etc/redis/redis.conf").contains("^appendfsync always$")
    assert host.file("/etc/redis/redis.conf").contains("^appendonly yes$")
    # What the running bulk pool was started with, not only what its settings file says.
    pid = host.run("systemctl show -P MainPID shoestring-worker-bulk.service").stdout.strip()
    environ = host.run("tr '\\0' '\\n' < /proc/%s/environ", pid).stdout.split()
    assert "SHOESTRING_BLOCK_BATCH_SIZE=1" in environ
    assert "SHOESTRING_FOLLOWER_PAGE_RELEASE=countdown" in environ
    assert "SHOESTRING_FOLLOWER_PAGE_SIZE=5000" in environ
    assert "SHOESTRING_FOLLOWER_PAGE_DELAY_S=600" in environ
    naive = smoke(agent_in_host, "naive", capsys)
    tuned = SMOKES.get("tuned")
    if tuned and tuned["wal_bytes_per_block"] and naive["wal_bytes_per_block"]:
        ratio = naive["wal_bytes_per_block"] / tuned["wal_bytes_per_block"]
        with capsys.disabled():
            print(f"naive/tuned WAL bytes per block on the Molecule host: {ratio:.1f}x")
