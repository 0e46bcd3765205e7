"""From the agent's raw samples to the figures the report states: per-second rates from
cumulative counters, the gp2 burst-balance and t3 CPU-credit models, percentiles, memory
growth, CPU per block, targets."""

import itertools
import math
import statistics

# gp2 (AWS EBS General Purpose SSD, previous generation): 3 IOPS per GiB of volume, at
# least 100; a bucket of 5.4 million I/O credits, full at the start, that pays for I/O
# above the baseline at up to 3,000 IOPS; when it is empty the volume runs at baseline.
GP2_CREDITS = 5_400_000
GP2_BURST_IOPS = 3000
SECTOR = 512
# t3.small CPU credits: one credit is one vCPU for a minute; it earns 24 an hour (0.4 vCPU,
# 20% of each of its 2 vCPUs) and banks at most what it earns in 24 hours (AWS's table of
# burstable instances: 576). Standard mode throttles to the baseline when the bank is
# empty; unlimited mode keeps going and bills the surplus at $0.05 per vCPU-hour (Linux).
T3_BASELINE_VCPU = 0.4
T3_VCPUS = 2
T3_MAX_CREDITS = 576
T3_SURPLUS_USD_PER_VCPU_HOUR = 0.05

# The targets for the tuned host.
# 90% of the per-address ceiling with 200-write calls (ceiling_figures): what the load is
# sized to offer 1.4 times (bench.run.auto_compression).
TARGET_BLOCKS_PER_S = 600
TARGET_CEILING_SHARE_PCT = 90
TARGET_CEILING_WRITES_PER_CALL = 200
TARGET_MEAN_WRITE_IOPS = 30
TARGET_IO_RATIO = 100
TARGET_PRIVATE_GROWTH_PCT = 5
TARGET_P99_S = 0.250
# Units that are not the appliance: the fake network. The bench agent runs in no unit
# (docker exec); its own CPU is `agent_cpu_s`.
NOT_APPLIANCE = {"fakesky"}


def gp2_baseline(size_gib):
    return max(100, 3 * size_gib)


def percentile(values, pct):
    """Nearest-rank percentile (pct in 0-100) of a non-empty list; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def window_means(values, size=10):
    """Means of consecutive, non-overlapping windows of `size` values (a short tail dropped)."""
    return [sum(values[i : i + size]) / size for i in range(0, len(values) - size + 1, size)]


def rolling_mean(values, size=10):
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= size:
            total -= values[i - size]
        out.append(total / min(i + 1, size))
    return out


def burst_balance(ios_per_second, baseline, credits=GP2_CREDITS, burst=GP2_BURST_IOPS):
    """Model the gp2 bucket second by second from the measured I/O (reads and writes).

    Each second earns `baseline` credits and spends one per I/O; the balance never exceeds
    `credits`. While the bucket holds credits the volume serves up to `burst` IOPS; empty,
    only `baseline`. Returns (balance after each second, seconds in which the modelled
    volume could not have served the measured I/O). The t3's CPU credits are the same
    bucket counted in vCPU-seconds (cpu_credit_bank)."""
    balance, balances, throttled = float(credits), [], []
    for second, ios in enumerate(ios_per_second):
        limit = burst if balance > 0 else baseline
        if ios > limit:
            throttled.append(second)
        served = min(ios, limit)
        balance = min(float(credits), max(0.0, balance + baseline - served))
        balances.append(balance)
    return balances, throttled


def cpu_credit_bank(
    vcpu_per_second, baseline=T3_BASELINE_VCPU, credits=T3_MAX_CREDITS, vcpus=T3_VCPUS
):
    """Model a t3's CPU credit bank (standard mode) second by second from the vCPUs used.

    It starts full (`credits`); each second earns baseline/60 credits and spends the vCPUs
    used /60, never above `credits`. While it holds credits the instance may use all its
    `vcpus`; empty, only the baseline (AWS lowers it gradually; the model at once).
    Returns (credits after each second, seconds in which the modelled instance could not
    have given the measured CPU)."""
    balances, throttled = burst_balance(vcpu_per_second, baseline, credits * 60, vcpus)
    return [balance / 60 for balance in balances], throttled


def credit_outlook(
    mean_vcpu,
    baseline=T3_BASELINE_VCPU,
    credits=T3_MAX_CREDITS,
    usd_per_vcpu_hour=T3_SURPLUS_USD_PER_VCPU_HOUR,
):
    """A mean rate held for ever: (hours a full bank lasts in standard mode, None if the
    rate is within the baseline; what unlimited mode bills a day for the surplus)."""
    surplus = mean_vcpu - baseline
    if surplus <= 0:
        return None, 0.0
    return credits / (surplus * 60), surplus * 24 * usd_per_vcpu_hour


def _dig(record, path, default=None):
    for key in path:
        if not isinstance(record, dict) or key not in record or record[key] is None:
            return default
        record = record[key]
    return record


def per_second(samples, path):
    """Differences of a cumulative counter between consecutive samples (None where missing;
    0 where the counter went back, as it does when a service restarts)."""
    out = []
    for before, after in itertools.pairwise(samples):
        a, b = _dig(before, path), _dig(after, path)
        out.append(None if a is None or b is None else max(0, b - a))
    return out


def _sum_devices(samples, field):
    devices = sorted(samples[0]["disk"]) if samples else []
    totals = [0] * max(0, len(samples) - 1)
    for device in devices:
        for i, value in enumerate(per_second(samples, ("disk", device, field))):
            totals[i] += value or 0
    return totals


def _median_at(series, times, start, end):
    values = [v for v, t in zip(series, times, strict=True) if start <= t <= end and v is not None]
    return statistics.median(values) if values else None


def memory_growth(samples, window_s=30):
    """Per service: RSS (anon + mapped file, MiB) and private memory (anon only) at the
    middle and the end of the load, as medians of `window_s` seconds, and the growth of
    each over that second half in percent."""
    if len(samples) < 2:
        return {}
    times = [s["t"] - samples[0]["t"] for s in samples]
    middle, end = times[-1] / 2, times[-1]
    units = sorted({u for s in samples for u in _dig(s, ("memory", "services"), {})})

    def halves(series):
        at_middle = _median_at(series, times, middle - window_s / 2, middle + window_s / 2)
        at_end = _median_at(series, times, end - window_s, end)
        growth = (
            100 * (at_end - at_middle) / at_middle if at_middle and at_end is not None else None
        )
        return at_middle, at_end, growth

    out = {}
    for unit in units:
        memory = [_dig(s, ("memory", "services", unit)) for s in samples]
        rss = [rss_mib(m) for m in memory]
        private = [private_mib(m) for m in memory]
        at_middle, at_end, growth = halves(rss)
        private_middle, private_end, private_growth = halves(private)
        out[unit] = {
            "middle_mib": at_middle,
            "end_mib": at_end,
            "peak_mib": max((v for v in rss if v is not None), default=None),
            "growth_pct": growth,
            "private_middle_mib": private_middle,
            "private_end_mib": private_end,
            "private_growth_pct": private_growth,
        }
    return out


def rss_mib(memory):
    """A service's resident memory from its cgroup: anonymous pages plus mapped files
    (Postgres' shared buffers are mapped shared memory)."""
    if not memory:
        return None
    return (memory.get("rss", 0) + memory.get("mapped_file", 0)) / 2**20


def private_mib(memory):
    """A service's private memory: its cgroup's anonymous pages (cgroup v1 `rss`), which
    leave out shared memory and files (Postgres' shared buffers are shmem: `cache`,
    `shmem`, `mapped_file`), so touching more of them is not growth."""
    if not memory or memory.get("rss") is None:
        return None
    return memory["rss"] / 2**20


def appliance_units(samples):
    """The units sampled that are the appliance: every one but NOT_APPLIANCE."""
    units = {u for s in samples for u in _dig(s, ("memory", "services"), {})}
    return sorted(units - NOT_APPLIANCE)


def vcpu_series(samples, units):
    """The vCPUs the units used together in each interval between samples (a second):
    CPU seconds from their cumulative cpu_ns (a missing or restarted unit adds 0)."""
    totals = [0.0] * max(0, len(samples) - 1)
    for unit in units:
        for i, value in enumerate(per_second(samples, ("memory", "services", unit, "cpu_ns"))):
            totals[i] += (value or 0) / 1e9
    return totals


def phase(samples, name):
    return [s for s in samples if s.get("phase") == name]


def blocks_series(samples):
    """Blocks made each second, from the fake's totals when it keeps them, else from what
    the app counts as done; and which source it was."""
    if samples and all(_dig(s, ("fake", "blocks")) is not None for s in samples):
        return [v or 0 for v in per_second(samples, ("fake", "blocks"))], "fake"
    return [v or 0 for v in per_second(samples, ("pg", "app_acted"))], "app"


def latency_summary(events):
    values = [e["latency_s"] for e in events if e.get("latency_s") is not None]
    failed = sum(1 for e in events if e.get("latency_s") is None)
    return {
        "count": len(values),
        "failed": failed,
        "p50_s": percentile(values, 50),
        "p99_s": percentile(values, 99),
        "max_s": max(values) if values else None,
    }


def summarize(stream, baseline_iops, compression, batch_size=None):
    """Every figure of one host's run, from the agent's records; `batch_size`, the
    accounts a batch blocks in one applyWrites call, if the host's settings were read."""
    samples = [r for r in stream if r.get("type") == "sample"]
    start = next((r for r in stream if r.get("type") == "start"), {})
    load = phase(samples, "load")
    # The flush phase continues the load phase's counters: the deferred writes belong to it.
    load_and_flush = load + phase(samples, "flush")
    idle = phase(samples, "idle")
    seconds = max(1.0, load[-1]["t"] - load[0]["t"]) if len(load) > 1 else 1.0

    writes = _sum_devices(load, "writes")
    reads = _sum_devices(load, "reads")
    write_bytes = [v * SECTOR for v in _sum_devices(load, "write_sectors")]
    blocks, blocks_source = blocks_series(load)
    blocks_total = sum(blocks)
    writes_with_flush = sum(_sum_devices(load_and_flush, "writes"))
    blocks_with_flush = sum(blocks_series(load_and_flush)[0])
    wal = per_second(load, ("pg", "wal_bytes"))
    wal_bytes = sum(v for v in wal if v is not None)
    balances, throttled = burst_balance(
        [w + r for w, r in zip(writes, reads, strict=True)], baseline_iops
    )
    drained_at = next((i for i, b in enumerate(balances) if b <= 0), None)
    mean_iops = sum(writes) / seconds
    mean_total_iops = (sum(writes) + sum(reads)) / seconds
    net_drain = mean_total_iops - baseline_iops
    windows = window_means(writes)

    # Each counted file system: /var, and Postgres' data when it has a device of its own.
    mounts = {device: mount for mount, device in _dig(start, ("args", "devices"), {}).items()}
    per_device = {}
    for device in sorted(load[0]["disk"]) if load else []:
        window = sum(v or 0 for v in per_second(load, ("disk", device, "writes")))
        flushed = sum(v or 0 for v in per_second(load_and_flush, ("disk", device, "writes")))
        per_device[mounts.get(device, device)] = {
            "device": device,
            "write_ios": window,
            "write_ios_per_block": window / blocks_total if blocks_total else None,
            "write_ios_with_flush": flushed,
            "write_ios_per_block_with_flush": (
                flushed / blocks_with_flush if blocks_with_flush else None
            ),
        }

    services = {}
    for unit in sorted({u for s in load for u in _dig(s, ("memory", "services"), {})}):
        cpu_s = sum(vcpu_series(load, [unit]))
        ooms = per_second(load_and_flush, ("memory", "services", unit, "oom_kill"))
        services[unit] = {
            "cpu_cores": cpu_s / seconds,
            "cpu_s": cpu_s,
            "cpu_ms_per_block": 1000 * cpu_s / blocks_total if blocks_total else None,
            "oom_kills": sum(v for v in ooms if v is not None),
        }
    growth = memory_growth(load)
    for unit, figures in growth.items():
        services.setdefault(unit, {}).update(figures)

    # The appliance's CPU against a t3.small's credits, the bank full at the start.
    units = appliance_units(load)
    vcpu = vcpu_series(load, units)
    cpu_s = sum(vcpu)
    credits, cpu_throttled = cpu_credit_bank(vcpu)
    mean_vcpu = cpu_s / seconds
    hours_to_empty, unlimited_usd_per_day = credit_outlook(mean_vcpu)

    broker = [s.get("broker") for s in load if s.get("broker")]
    events = [r for r in stream if r.get("type") in ("click", "read")]
    clicks = [e for e in events if e["type"] == "click"]
    pages = [e for e in events if e["type"] == "read" and e.get("page") == "campaign"]
    progress = [e for e in events if e["type"] == "read" and e.get("page") == "progress"]
    truth = [r for r in stream if r.get("type") == "truth"]
    fake_first, fake_last = (
        (load[0].get("fake") or {}, load[-1].get("fake") or {}) if load else ({}, {})
    )

    def fake_delta(name):
        if fake_first.get(name) is None or fake_last.get(name) is None:
            return None
        return fake_last[name] - fake_first[name]

    container_oom = per_second(load_and_flush, ("memory", "container", "oom_kill"))
    settings = start.get("fake_settings", {})
    return {
        "seconds": seconds,
        "compression": compression,
        "blocks": blocks_total,
        "blocks_source": blocks_source,
        "blocks_per_s": blocks_total / seconds,
        "blocks_per_day": blocks_total / seconds * 86400,
        "blocks_per_s_windows_p10": percentile(window_means(blocks, 60), 10),
        "write_ios": sum(writes),
        "read_ios": sum(reads),
        "write_mib": sum(write_bytes) / 2**20,
        "write_iops_mean": mean_iops,
        "write_iops_p95_10s": percentile(windows, 95),
        "write_iops_max": max(writes) if writes else None,
        "idle_write_iops": (
            sum(_sum_devices(idle, "writes")) / max(1.0, idle[-1]["t"] - idle[0]["t"])
            if len(idle) > 1
            else None
        ),
        "write_ios_per_block": sum(writes) / blocks_total if blocks_total else None,
        "write_ios_with_flush": writes_with_flush,
        "write_ios_per_block_with_flush": (
            writes_with_flush / blocks_with_flush if blocks_with_flush else None
        ),
        "devices": per_device,
        "wal_bytes": wal_bytes,
        "wal_bytes_per_block": wal_bytes / blocks_total if blocks_total else None,
        "baseline_iops": baseline_iops,
        "balance_min_pct": 100 * min(balances) / GP2_CREDITS if balances else None,
        "balance_end_pct": 100 * balances[-1] / GP2_CREDITS if balances else None,
        "balance_fell": bool(balances) and min(balances) < GP2_CREDITS,
        "seconds_over_baseline": sum(
            1 for w, r in zip(writes, reads, strict=True) if w + r > baseline_iops
        ),
        "drained_at_s": drained_at,
        "throttled_s": len(throttled),
        "hours_to_drain_at_mean": GP2_CREDITS / net_drain / 3600 if net_drain > 0 else None,
        "services": services,
        "appliance_units": units,
        "appliance_cpu_s": cpu_s,
        "appliance_vcpu_mean": mean_vcpu,
        "appliance_cpu_ms_per_block": 1000 * cpu_s / blocks_total if blocks_total else None,
        "blocks_per_s_at_cpu_baseline": (
            T3_BASELINE_VCPU * blocks_total / cpu_s if cpu_s and blocks_total else None
        ),
        "cpu_credits_start": T3_MAX_CREDITS,
        "cpu_credits_min": min(credits) if credits else None,
        "cpu_credits_end": credits[-1] if credits else None,
        "cpu_credits_drained_at_s": next((i for i, c in enumerate(credits) if c <= 0), None),
        "cpu_throttled_s": len(cpu_throttled),
        "cpu_credits_hours_to_empty_at_mean": hours_to_empty,
        "unlimited_usd_per_day": unlimited_usd_per_day,
        "batch_size": batch_size,
        "container_oom_kills": sum(v for v in container_oom if v is not None),
        "swap_ins": sum(v or 0 for v in per_second(load_and_flush, ("vm", "pswpin"))),
        "major_faults": sum(
            v or 0 for v in per_second(load, ("memory", "container", "pgmajfault"))
        ),
        "broker_depth_max": {
            q: max((b["depth"].get(q, 0) for b in broker), default=None)
            for q in ("interactive", "bulk", "maintenance")
        },
        "broker_oldest_s_max": max(
            (max(b["oldest_s"].values(), default=0) for b in broker), default=None
        ),
        "broker_unacked_max": max((b["unacked"] for b in broker), default=None),
        "broker_unacked_oldest_s_max": max((b["unacked_oldest_s"] for b in broker), default=None),
        "broker_samples_missing": len(load) - len(broker),
        "clicks": latency_summary(clicks),
        "campaign_page": latency_summary(pages),
        "progress_json": latency_summary(progress),
        "fake_429": fake_delta("rate_limited"),
        "fake_ip_429": fake_delta("ip_rate_limited"),
        "fake_requests": fake_delta("requests"),
        "duplicates": sum(t.get("duplicates", 0) for t in truth),
        "fake_settings": settings,
        "fake_missing": start.get("fake_missing", []),
        "agent_cpu_s": (load[-1]["agent_cpu_s"] - load[0]["agent_cpu_s"]) if load else None,
        "samples": len(load),
    }


def ip_rate(settings):
    """Requests a second one client address may make (the fake's window, else Bluesky's)."""
    requests = settings.get("ip_requests_per_window")
    window = settings.get("ip_window_s")
    if not requests or not window:
        requests, window = 3000, 300.0  # Bluesky's, when the fake does not enforce one
    return requests / window


def ip_ceiling(settings, writes_per_call=200, followers_per_page=100):
    """Blocks a second the per-IP request budget allows when every block costs
    1/writes_per_call of an applyWrites call and 1/followers_per_page of a follower page."""
    return ip_rate(settings) / (1 / writes_per_call + 1 / followers_per_page)


def ceiling_figures(settings, blocks_per_s, batch_size=None):
    """The per-IP ceiling with 200-write calls (the most one call takes) and with the batch
    size the host ran with (None when it was not read), and the share of each reached."""
    top = ip_ceiling(settings)
    host = ip_ceiling(settings, writes_per_call=batch_size) if batch_size else None
    return {
        "per_ip_rps": ip_rate(settings),
        "blocks_per_s": top,
        "reached_pct": 100 * blocks_per_s / top,
        "batch_size": batch_size,
        "host_blocks_per_s": host,
        "host_reached_pct": 100 * blocks_per_s / host if host else None,
    }


def verdicts(tuned, naive):
    """Each target of the issue's headline: (name, measured text, met?)."""
    rows = []

    def add(name, measured, met):
        rows.append({"target": name, "measured": measured, "met": met})

    share, calls = TARGET_CEILING_SHARE_PCT, TARGET_CEILING_WRITES_PER_CALL
    ceiling = ceiling_figures(
        tuned.get("fake_settings") or {}, tuned["blocks_per_s"], tuned.get("batch_size")
    )
    batch = ceiling["batch_size"]
    measured = f"{tuned['blocks_per_s']:.1f} blocks/s"
    if batch:
        reached = ceiling["host_reached_pct"]
        measured += f", {reached:.1f}% of {ceiling['host_blocks_per_s']:.0f}"
        if batch != calls:
            measured += (
                f" (its {batch}-write calls; {ceiling['reached_pct']:.1f}% of the"
                f" {ceiling['blocks_per_s']:.0f} {calls}-write calls allow)"
            )
    else:
        reached = ceiling["reached_pct"]
        measured += (
            f", {reached:.1f}% of {ceiling['blocks_per_s']:.0f} (the batch size the host ran"
            " with was not read)"
        )
    add(
        f"tuned sustains >= {share}% of the per-address ceiling with"
        + (f" its {batch}-write calls" if batch else f" {calls}-write calls"),
        measured,
        reached >= share,
    )
    add(
        f"tuned mean write IOPS <= {TARGET_MEAN_WRITE_IOPS}",
        f"{tuned['write_iops_mean']:.1f}",
        tuned["write_iops_mean"] <= TARGET_MEAN_WRITE_IOPS,
    )
    vcpu = tuned.get("appliance_vcpu_mean")
    if vcpu is None:
        measured = "not measured"
    elif vcpu <= T3_BASELINE_VCPU:
        measured = f"{vcpu:.3f} vCPU mean ({100 * vcpu / T3_BASELINE_VCPU:.0f}% of it)"
    else:
        measured = (
            f"{vcpu:.3f} vCPU mean, {vcpu - T3_BASELINE_VCPU:.3f} over: unlimited mode"
            f" ${tuned['unlimited_usd_per_day']:.2f} a day, standard mode empties a full bank"
            f" in {tuned['cpu_credits_hours_to_empty_at_mean']:.1f} h"
        )
    add(
        f"tuned appliance CPU within the credit baseline ({T3_BASELINE_VCPU} vCPU mean)",
        measured,
        vcpu is not None and vcpu <= T3_BASELINE_VCPU,
    )
    growth = {
        unit: f["private_growth_pct"]
        for unit, f in tuned["services"].items()
        if unit not in NOT_APPLIANCE and f.get("private_growth_pct") is not None
    }
    worst = max(growth.items(), key=lambda item: item[1], default=(None, None))
    add(
        f"tuned private-memory growth < {TARGET_PRIVATE_GROWTH_PCT}% over the second half"
        " (every service)",
        f"largest {worst[1]:+.1f}% ({worst[0]})" if worst[0] else "not measured",
        bool(growth) and worst[1] < TARGET_PRIVATE_GROWTH_PCT,
    )
    ratio = None
    if (
        naive
        and tuned.get("write_ios_per_block_with_flush")
        and naive.get("write_ios_per_block_with_flush")
    ):
        ratio = naive["write_ios_per_block_with_flush"] / tuned["write_ios_per_block_with_flush"]
    add(
        f"naive/tuned write IOs per block >= {TARGET_IO_RATIO}",
        f"{ratio:.1f}x" if ratio is not None else "not measured",
        ratio is not None and ratio >= TARGET_IO_RATIO,
    )
    add(
        "tuned: nothing lost or made twice (duplicates 0)",
        f"{tuned['duplicates']} made twice (blocks lost are counted by `make faults`)",
        tuned["duplicates"] == 0,
    )
    p99 = tuned["clicks"]["p99_s"]
    add(
        f"tuned p99 single-account block, click to record < {int(TARGET_P99_S * 1000)} ms",
        f"{p99 * 1000:.0f} ms" if p99 is not None else "not measured",
        p99 is not None and p99 < TARGET_P99_S,
    )
    return rows, ratio
