"""What `make bench-cluster` reports, from what it recorded: the agent's samples (one a second,
the fake's totals and its counters per client address among them) and the controller's
snapshots of every host at the edges of each measured phase (each container's CPU from its
cgroup, its counted /var's completed writes). Pure functions; bench/cluster.py runs the hosts."""

from .analysis import ip_rate
from .report import _fmt

# The goal of issue 19: two workers hosts make at least this many times one host's blocks/s.
TARGET_RATIO = 1.8


def sample_at(samples, t, after=True):
    """The first sample at or after `t` (or the last at or before it), among those that carry
    the fake's totals; None if there is none."""
    with_fake = [s for s in samples if (s.get("fake") or {}).get("blocks") is not None]
    if after:
        return next((s for s in with_fake if s["t"] >= t), None)
    return next((s for s in reversed(with_fake) if s["t"] <= t), None)


def _delta(before, after, key):
    if before.get(key) is None or after.get(key) is None:
        return None
    return after[key] - before[key]


def address_figures(first, last, seconds, names, per_ip_rps):
    """Per client address the fake saw: requests, write calls answered and per-address 429s
    between two samples, the requests' rate and its share of the per-address limit."""
    before = first["fake"].get("addresses") or {}
    after = last["fake"].get("addresses") or {}
    out = {}
    for address in sorted(after):
        counts = {
            key: after[address].get(key, 0) - (before.get(address) or {}).get(key, 0)
            for key in ("requests", "writes", "ip_rate_limited")
        }
        if not any(counts.values()):
            continue
        rate = counts["requests"] / seconds if seconds else None
        out[address] = {
            "host": names.get(address, "?"),
            **counts,
            "requests_per_s": rate,
            "share_pct": 100 * rate / per_ip_rps if rate is not None else None,
        }
    return out


def host_figures(start, end):
    """Per host, between two snapshots: CPU seconds and mean vCPU, and the counted /var's
    write and read IOs and mean write IOPS."""
    seconds = end["t"] - start["t"]
    out = {}
    for host, after in end["hosts"].items():
        before = start["hosts"].get(host, {})
        cpu_ns = _delta(before, after, "cpu_ns")
        writes = _delta(before, after, "write_ios")
        out[host] = {
            "cpu_s": cpu_ns / 1e9 if cpu_ns is not None else None,
            "vcpu": cpu_ns / 1e9 / seconds if cpu_ns is not None and seconds else None,
            "write_ios": writes,
            "write_iops": writes / seconds if writes is not None and seconds else None,
            "read_ios": _delta(before, after, "read_ios"),
        }
    return out


def phase_figures(samples, start, end, names, settings):
    """One measured phase between the controller's snapshots `start` and `end`: blocks a
    second on the fake, its counters per address, every host's CPU and writes."""
    first = sample_at(samples, start["t"])
    last = sample_at(samples, end["t"], after=False)
    if first is None or last is None or last["t"] <= first["t"]:
        raise ValueError("no samples of the fake's totals inside the phase")
    seconds = last["t"] - first["t"]
    blocks = last["fake"]["blocks"] - first["fake"]["blocks"]
    return {
        "seconds": round(end["t"] - start["t"], 1),
        "sampled_seconds": round(seconds, 1),
        "blocks": blocks,
        "blocks_per_s": blocks / seconds,
        "duplicates": last["fake"].get("duplicates"),
        "addresses": address_figures(first, last, seconds, names, ip_rate(settings)),
        "hosts": host_figures(start, end),
        "others": sorted(set(start.get("others", [])) | set(end.get("others", []))),
        "load_average": end.get("load_average"),
    }


def ratio(one, two):
    """Two workers hosts' blocks/s over one's; None without a rate for one."""
    return two["blocks_per_s"] / one["blocks_per_s"] if one["blocks_per_s"] else None


def _both(phases, get):
    return " | ".join(get(phases[name]) for name in phases)


def summary_markdown(meta, phases, measured_ratio):
    """The run's summary: how it ran, one column per phase, the goal."""
    names = list(phases)
    lines = [
        f"### Two workers hosts against one {meta['date']} commit {meta['commit']}",
        "",
        f"molecule/cluster's hosts (a database host, a web host, two workers hosts, the fake"
        f" network and moto_server on a fifth; each a t3.small-shaped container: 2 CPUs,"
        f" 2 GiB), all on one build machine: {meta['machine']}. {meta['people']} people"
        f" with campaigns, per-account windows compressed {meta['compression']:g}x (they ask"
        f" for what {meta['people'] * meta['compression']:,.0f} people would); the fake's"
        f" per-address limit real ({meta['per_ip_rps']:g} requests a second). One phase with"
        f" the second workers host's pools stopped, then one with both; each measured for"
        f" {meta['measure_s']:g} s after a warm-up ({meta['warmup_s']:g} s, then"
        f" {meta['warmup_two_s']:g} s once the second host's pools started).",
        "",
        "| figure | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        f"| measured (s) | {_both(phases, lambda p: _fmt(p['seconds']))} |",
        f"| blocks made (fake) | {_both(phases, lambda p: _fmt(p['blocks']))} |",
        f"| **blocks/s** | {_both(phases, lambda p: '**' + _fmt(p['blocks_per_s']) + '**')} |",
    ]
    hosts = sorted({h for p in phases.values() for h in p["hosts"]})
    for host in hosts:

        def cpu(p, host=host):
            f = p["hosts"].get(host) or {}
            return f"{_fmt(f.get('cpu_s'))} s ({_fmt(f.get('vcpu'), 2)} vCPU)"

        def iops(p, host=host):
            f = p["hosts"].get(host) or {}
            return f"{_fmt(f.get('write_ios'))} ({_fmt(f.get('write_iops'), 2)})"

        lines.append(f"| {host}: CPU (mean vCPU) | {_both(phases, cpu)} |")
        lines.append(f"| {host}: write IOs on /var (IOPS) | {_both(phases, iops)} |")
    addresses = sorted({a for p in phases.values() for a in p["addresses"]})
    for address in addresses:

        def counts(p, address=address):
            f = p["addresses"].get(address)
            if f is None:
                return "0"
            return (
                f"{_fmt(f['requests'])} requests ({_fmt(f['requests_per_s'], 2)}/s,"
                f" {_fmt(f['share_pct'])}% of the limit), {_fmt(f['writes'])} writes,"
                f" {_fmt(f['ip_rate_limited'])} 429s"
            )

        host = next(
            p["addresses"][address]["host"] for p in phases.values() if address in p["addresses"]
        )
        lines.append(f"| the fake's counters for {address} ({host}) | {_both(phases, counts)} |")
    others = _both(phases, lambda p: ", ".join(p["others"]) or "none")
    lines.append(f"| other containers running (at the phase's start or end) | {others} |")
    duplicates = _both(phases, lambda p: _fmt(p["duplicates"]))
    lines.append(f"| duplicate block records (fake, at the end) | {duplicates} |")
    verdict = (
        "n/a" if measured_ratio is None else ("met" if measured_ratio >= TARGET_RATIO else "missed")
    )
    lines += [
        "",
        f"Two/one: **{_fmt(measured_ratio, 2)}x** (goal at least {TARGET_RATIO}x: {verdict}).",
        "",
        "CPU is each container's cgroup (`cpuacct.usage`): every process of the host, the"
        " bench agent's too on the database host (its own CPU: "
        f"{_fmt(meta.get('agent_cpu_s'))} s over the whole load). Writes are the completed"
        " writes of each tier host's /var, an ext4 file system on a loop device of its own"
        " (`bench/hosts.sh attach`, as `make bench` counts), page-cache writeback included;"
        " the fake's host (the network and moto_server, not the appliance) has none.",
        "",
        f"Load average before / after: {meta['load_before']} / {meta.get('load_after', 'n/a')}."
        f" Other containers on the machine at any snapshot: {meta['others']}.",
    ]
    if meta.get("fake_unit"):
        lines += ["", f"The fake's unit at the end: {', '.join(meta['fake_unit'])}."]
    if meta.get("notes"):
        lines += ["", meta["notes"]]
    return "\n".join(lines) + "\n"
