"""The run's outputs: per-second CSV, the plot (matplotlib) and the Markdown summary."""

import csv
from pathlib import Path

from . import analysis

GIB = 2**30


def _fmt(value, digits=1, suffix="", prefix=""):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{prefix}{value:,.{digits}f}{suffix}"
    return f"{prefix}{value:,}{suffix}"


def _ms(value):
    return "n/a" if value is None else f"{value * 1000:,.0f} ms"


def series(stream, baseline_iops):
    """Per-second rows of the load (and flush) phases: what the CSV holds and the plot draws."""
    samples = [r for r in stream if r.get("type") == "sample" and r["phase"] in ("load", "flush")]
    if len(samples) < 2:
        return []
    writes = analysis._sum_devices(samples, "writes")
    reads = analysis._sum_devices(samples, "reads")
    write_bytes = analysis._sum_devices(samples, "write_sectors")
    blocks, _ = analysis.blocks_series(samples)
    wal = analysis.per_second(samples, ("pg", "wal_bytes"))
    balances, _ = analysis.burst_balance(
        [w + r for w, r in zip(writes, reads, strict=True)], baseline_iops
    )
    vcpu = analysis.vcpu_series(samples, analysis.appliance_units(samples))
    credits, _ = analysis.cpu_credit_bank(vcpu)
    units = sorted({u for s in samples for u in (s.get("memory") or {}).get("services", {})})
    t0 = samples[0]["t"]
    rows = []
    for i, sample in enumerate(samples[1:]):
        broker = sample.get("broker") or {}
        row = {
            "t_s": round(sample["t"] - t0, 1),
            "phase": sample["phase"],
            "write_ios": writes[i],
            "read_ios": reads[i],
            "write_kib": write_bytes[i] * analysis.SECTOR / 1024,
            "blocks": blocks[i],
            "wal_bytes": wal[i],
            "burst_balance": round(balances[i]),
            "appliance_vcpu": round(vcpu[i], 3),
            "cpu_credits": round(credits[i], 3),
            "broker_bulk": (broker.get("depth") or {}).get("bulk"),
            "broker_unacked": broker.get("unacked"),
            "broker_oldest_s": max((broker.get("oldest_s") or {}).values(), default=None),
        }
        services = (sample.get("memory") or {}).get("services", {})
        for unit in units:
            rss = analysis.rss_mib(services.get(unit))
            row[f"rss_mib_{unit}"] = round(rss, 1) if rss is not None else None
        for unit in units:
            private = analysis.private_mib(services.get(unit))
            row[f"private_mib_{unit}"] = round(private, 1) if private is not None else None
        rows.append(row)
    return rows


def write_csv(path, rows):
    if not rows:
        return
    names = list(dict.fromkeys(name for row in rows for name in row))
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def plot(path, rows_by_host, baseline_iops, title):
    """Four panels: write IOPS against gp2's baseline, the modelled burst balance, blocks a
    second, and each service's RSS (tuned solid, naive dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(11, 14), sharex=True)
    colours = {"tuned": "tab:green", "naive": "tab:red"}
    styles = {"tuned": "-", "naive": "--"}
    lowest = 100.0
    for host, rows in rows_by_host.items():
        if not rows:
            continue
        t = [r["t_s"] for r in rows]
        colour = colours.get(host, "tab:blue")
        writes = [r["write_ios"] for r in rows]
        axes[0].plot(t, writes, color=colour, alpha=0.25, linewidth=0.6)
        axes[0].plot(t, analysis.rolling_mean(writes), color=colour, label=f"{host} (10 s mean)")
        axes[1].plot(
            t,
            [100 * r["burst_balance"] / analysis.GP2_CREDITS for r in rows],
            color=colour,
            label=host,
        )
        axes[2].plot(
            t, analysis.rolling_mean([r["blocks"] for r in rows]), color=colour, label=host
        )
        for name in [n for n in rows[0] if n.startswith("rss_mib_")]:
            values = [r.get(name) for r in rows]
            if max((v or 0) for v in values) < 20:
                continue  # small services would only crowd the panel
            axes[3].plot(t, values, linestyle=styles.get(host, "-"), label=f"{host} {name[8:]}")
        flush = next((r["t_s"] for r in rows if r["phase"] == "flush"), None)
        if flush is not None:
            for axis in axes:
                axis.axvline(flush, color=colour, linestyle=":", linewidth=0.8)
        lowest = min(lowest, min(100 * r["burst_balance"] / analysis.GP2_CREDITS for r in rows))
    axes[0].axhline(
        baseline_iops, color="black", linestyle=":", label=f"gp2 baseline {baseline_iops} IOPS"
    )
    axes[0].axhline(
        analysis.TARGET_MEAN_WRITE_IOPS, color="grey", linestyle="-.", label="target: 30 IOPS mean"
    )
    axes[0].set_ylabel("write IOs / s")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylabel("burst balance (% of 5.4M)")
    axes[1].ticklabel_format(axis="y", useOffset=False, style="plain")
    # Zoomed to what happened (a flat 100% is a balance that never fell).
    axes[1].set_ylim(bottom=max(0.0, lowest - (100 - lowest) * 0.2 - 0.01), top=100.005)
    axes[2].axhline(
        analysis.TARGET_BLOCKS_PER_S,
        color="grey",
        linestyle="-.",
        label=f"target: {analysis.TARGET_BLOCKS_PER_S}/s",
    )
    axes[2].set_ylabel("blocks / s (10 s mean)")
    axes[3].set_ylabel("RSS (MiB)")
    axes[3].set_xlabel("seconds since the load started (dotted: load ends, final flush)")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper right", ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _latency(figures, failed=False):
    counts = f"{figures['count']}, {figures['failed']} failed" if failed else figures["count"]
    return f"{_ms(figures['p50_s'])} / {_ms(figures['p99_s'])} ({counts})"


def _drained(at, hours):
    """Whether a modelled bucket emptied in the run, and how long a full one lasts at the
    run's mean rate."""
    text = f"yes, at {at} s" if at is not None else "no"
    if hours:
        return text + f"; at the mean rate empty after {hours:,.1f} h"
    return text + "; never at the mean rate: under the baseline"


def _cpu_credits(f):
    if f.get("cpu_credits_min") is None:
        return "n/a"
    return f"{_fmt(f['cpu_credits_min'])} / {_fmt(f['cpu_credits_end'])}"


def _credits_drained(f):
    if f.get("cpu_credits_min") is None:
        return "n/a"
    return _drained(f["cpu_credits_drained_at_s"], f["cpu_credits_hours_to_empty_at_mean"])


def _service(s):
    """One unit's memory and CPU: RSS, private memory, their growth, CPU (n/a where an
    older summary lacks a figure)."""
    return (
        f"{_fmt(s.get('end_mib'))} MiB end, {_fmt(s.get('peak_mib'))} peak,"
        f" {_fmt(s.get('growth_pct'), 1, '%')} 2nd half; private {_fmt(s.get('private_end_mib'))}"
        f" MiB, {_fmt(s.get('private_growth_pct'), 1, '%')} 2nd half;"
        f" {_fmt(s.get('cpu_cores'), 2)} CPU, {_fmt(s.get('cpu_ms_per_block'), 3)} ms per block"
    )


def _requests(f):
    """What the host sent the network a second and its share of the per-IP limit: every
    request counts (pages, writes, the clicks' and campaign starts' own), not only blocks."""
    if f.get("fake_requests") is None or not f.get("seconds"):
        return "not measured"
    rate = f["fake_requests"] / f["seconds"]
    limit = analysis.ip_rate(f.get("fake_settings") or {})
    return f"{_fmt(rate, 2)}, {_fmt(100 * rate / limit)}%"


def units_line(figures):
    """Which units the appliance's CPU counts (an older summary names none)."""
    units = sorted({u for f in figures.values() for u in f.get("appliance_units") or ()})
    if not units:
        return None
    left_out = ", ".join(f"`{u}`" for u in sorted(analysis.NOT_APPLIANCE))
    return (
        f"Appliance CPU counts every unit but {left_out} (the fake network; the bench agent"
        f" runs in no unit, its CPU is the last row): {', '.join(f'`{u}`' for u in units)}."
    )


def ceiling_line(ceiling, tuned):
    """The per-IP ceiling with 200-write calls and with the tuned host's own batches."""
    most = analysis.TARGET_CEILING_WRITES_PER_CALL
    text = (
        f"Per-IP ceiling: {_fmt(ceiling['per_ip_rps'], 1)} requests/s allow about"
        f" {_fmt(ceiling['blocks_per_s'], 0)} blocks/s with {most}-write calls and 100-follower"
        " pages"
    )
    batch = ceiling.get("batch_size")
    if batch == most:
        text += ", the tuned host's calls"
    elif batch:
        text += (
            f" ({_fmt(ceiling['host_blocks_per_s'], 0)} with the tuned host's {batch}-write calls)"
        )
    elif "batch_size" in ceiling:
        text += " (the batch size the tuned host ran with was not read)"
    else:  # an older summary: the app's batches were 50
        text += f" ({_fmt(ceiling['app_blocks_per_s'], 0)} with the app's batches of 50)"
    if not tuned:
        return text + "."
    text += f"; the tuned host reached {_fmt(ceiling['reached_pct'])}% of it"
    if batch and batch != most:
        text += f" and {_fmt(ceiling['host_reached_pct'])}% of its own"
    return text + "."


# The reference measurement of the same setup (Postgres alone on a counted device,
# the fake's limits lifted, one 5,000-follower campaign).
CALIBRATION = {"tuned": 0.04, "naive": 4.0}
CALIBRATION_NAIVE_BLOCKS_PER_S = 18


def calibration_lines(figures):
    lines = ["Calibration against the reference measurement of the same setup:", ""]
    for host, f in figures.items():
        pg = f["devices"].get("/var/lib/postgresql") or {}
        lines.append(
            f"- {host}: {_fmt(pg.get('write_ios_per_block'), 3)} Postgres-device write IOs per"
            f" block in the window, {_fmt(pg.get('write_ios_per_block_with_flush'), 3)} with the"
            f" final CHECKPOINT (reference: about {CALIBRATION.get(host, 'n/a')});"
            f" {_fmt(f['blocks_per_s'])} blocks/s"
            + (f" (reference: near {CALIBRATION_NAIVE_BLOCKS_PER_S})" if host == "naive" else "")
            + "."
        )
    return lines


def _people(count):
    return f"{count} {'person' if count == 1 else 'people'}"


def files_line(results_dir):
    """Where a run's outputs are: its summaries in git, the raw files only where it ran."""
    if Path(results_dir).is_absolute():  # a smoke run's temporary directory
        return f"- Raw samples, CSV, plot and summary: `{results_dir}/` (temporary)."
    return (
        f"- In git: `summary.md` and `summary.json` in `{results_dir}/`. The raw samples,"
        " per-second CSVs, plot and provision logs stay in that directory on the machine that"
        " ran it, not in git."
    )


def summary_markdown(meta, figures, verdict_rows, ratio, ceiling, services=True):
    """The run's summary: the machine, the load, one table of figures per host, the targets.
    Without `services`, no row per systemd unit (docs/benchmarks.md's shorter table)."""
    hosts = list(figures)
    pgdata = " (Postgres' data on a second one)" if meta.get("split_pgdata") else ""
    lines = [
        f"### {meta['date']} commit {meta['commit']}:"
        f" {meta['minutes']:g} min, {_people(meta['people'])}",
        "",
        f"- Machine: {meta['machine']}; load average (1, 5, 15 min) before"
        f" {meta['load_before']}, after {meta['load_after']}: other engineers' tests share the"
        " CPUs, so figures are noisy.",
        "- Hosts: Debian 12 containers, 2 CPUs, 2 GiB RAM, no swap (swapon cannot work in a"
        f" container), /var on its own ext4 on a loop device{pgdata}; gp2 model: baseline"
        f" {meta['iops']} IOPS, 5.4M credits, 3,000 IOPS burst; CPU credit model: a t3.small"
        f" in standard mode, {analysis.T3_BASELINE_VCPU} vCPU baseline, its bank of"
        f" {analysis.T3_MAX_CREDITS} credits full at the start.",
        f"- Load: {_people(meta['people'])} with campaigns, {_people(meta['clickers'])}"
        f" clicking a single-account block every {meta['click_every_s']:g} s, a reader every"
        f" {meta['read_every_s']:g} s. {meta['fake_note']}",
        files_line(meta["results_dir"]),
        "",
        "| figure | " + " | ".join(hosts) + " |",
        "|---|" + "---|" * len(hosts),
    ]

    def row(label, fn):
        lines.append(f"| {label} | " + " | ".join(fn(figures[h]) for h in hosts) + " |")

    row("load phase (s)", lambda f: _fmt(f["seconds"], 0))
    row("blocks made (source)", lambda f: f"{_fmt(f['blocks'])} ({f['blocks_source']})")
    row(
        "blocks/s (per day at that rate)",
        lambda f: f"{_fmt(f['blocks_per_s'])} ({_fmt(f['blocks_per_day'], 0)})",
    )
    row(
        "blocks/s, worst minute (p10 of 60 s windows)",
        lambda f: _fmt(f["blocks_per_s_windows_p10"]),
    )
    row(
        "write IOPS mean / p95 (10 s) / max",
        lambda f: " / ".join(
            _fmt(f[k]) for k in ("write_iops_mean", "write_iops_p95_10s", "write_iops_max")
        ),
    )
    row("write IOPS idle (before the load)", lambda f: _fmt(f["idle_write_iops"], 2))
    row("read IOs", lambda f: _fmt(f["read_ios"]))
    row("write IOs per block (window)", lambda f: _fmt(f["write_ios_per_block"], 4))
    row(
        "write IOs per block incl. final CHECKPOINT + sync",
        lambda f: _fmt(f["write_ios_per_block_with_flush"], 4),
    )
    mounts = sorted({m for f in figures.values() for m in f["devices"]})
    if len(mounts) > 1:
        for mount in mounts:
            row(
                f"write IOs per block on `{mount}` (window / incl. flush)",
                lambda f, mount=mount: " / ".join(
                    _fmt((f["devices"].get(mount) or {}).get(k), 4)
                    for k in ("write_ios_per_block", "write_ios_per_block_with_flush")
                ),
            )
    row("WAL bytes per block", lambda f: _fmt(f["wal_bytes_per_block"], 0))
    row("MiB written", lambda f: _fmt(f["write_mib"]))
    row(
        "burst balance: lowest / end (% of full)",
        lambda f: f"{_fmt(f['balance_min_pct'], 3)} / {_fmt(f['balance_end_pct'], 3)}",
    )
    row(
        "burst balance: drained?",
        lambda f: _drained(f["drained_at_s"], f["hours_to_drain_at_mean"]),
    )
    row("seconds over the baseline", lambda f: _fmt(f["seconds_over_baseline"]))
    row("batch size (writes per applyWrites call)", lambda f: _fmt(f.get("batch_size")))
    row(
        "appliance CPU: mean vCPU / ms per block",
        lambda f: (
            f"{_fmt(f.get('appliance_vcpu_mean'), 3)} /"
            f" {_fmt(f.get('appliance_cpu_ms_per_block'), 3, ' ms')}"
        ),
    )
    row(
        f"blocks/s the CPU credit baseline sustains ({analysis.T3_BASELINE_VCPU} vCPU)",
        lambda f: _fmt(f.get("blocks_per_s_at_cpu_baseline")),
    )
    row(f"CPU credits: lowest / end (of {analysis.T3_MAX_CREDITS})", _cpu_credits)
    row("CPU credits: drained?", _credits_drained)
    row(
        "unlimited mode: surplus billed a day at the mean rate",
        lambda f: _fmt(f.get("unlimited_usd_per_day"), 2, prefix="$"),
    )
    row(
        "OOM kills (services + container)",
        lambda f: _fmt(
            f["container_oom_kills"] + sum(s.get("oom_kills", 0) for s in f["services"].values())
        ),
    )
    row(
        "swap-ins (host) / major faults (container)",
        lambda f: f"{_fmt(f['swap_ins'])} / {_fmt(f['major_faults'])}",
    )
    row(
        "broker depth max (interactive/bulk/maintenance)",
        lambda f: " / ".join(_fmt(v) for v in f["broker_depth_max"].values()),
    )
    row("oldest queued message, max age", lambda f: _fmt(f["broker_oldest_s_max"], 1, " s"))
    row(
        "held by workers (unacked) max / oldest",
        lambda f: (
            f"{_fmt(f['broker_unacked_max'])} / {_fmt(f['broker_unacked_oldest_s_max'], 0, ' s')}"
        ),
    )
    row(
        "single block click to record p50 / p99 (n, failed)",
        lambda f: _latency(f["clicks"], failed=True),
    )
    row(
        "campaign page p50 / p99 (n)",
        lambda f: _latency(f["campaign_page"]),
    )
    row(
        "progress JSON p50 / p99 (n)",
        lambda f: _latency(f["progress_json"]),
    )
    row("requests to the network a second, share of the per-IP limit", _requests)
    row(
        "fake: 429s per account / per IP",
        lambda f: f"{_fmt(f['fake_429'])} / {_fmt(f['fake_ip_429'])}",
    )
    row("duplicate block records (fake)", lambda f: _fmt(f["duplicates"]))
    units = sorted({u for f in figures.values() for u in f["services"]}) if services else []
    for unit in units:
        row(
            f"`{unit}` RSS / private memory / CPU",
            lambda f, unit=unit: _service(f["services"][unit]) if unit in f["services"] else "n/a",
        )
    row("bench agent CPU (s, inside the host)", lambda f: _fmt(f["agent_cpu_s"]))
    counted = units_line(figures)
    lines += ["", counted] if counted else []
    if meta.get("calibration"):
        lines += ["", *calibration_lines(figures)]
    lines += [
        "",
        f"Naive/tuned write IOs per block (both incl. the final flush): **{_fmt(ratio)}x**."
        if ratio
        else "",
    ]
    if meta.get("calibration"):
        # The fake's limits are lifted and one person is no load: no ceiling, no targets.
        return "\n".join([*lines, ""])
    lines += [
        ceiling_line(ceiling, "tuned" in figures),
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    for v in verdict_rows:
        lines.append(f"| {v['target']} | {v['measured']} | {'met' if v['met'] else '**missed**'} |")
    lines.append("")
    return "\n".join(line for line in lines if line is not None)


def write(path, text):
    Path(path).write_text(text)
