"""make bench-watch: how long a newcomer waits before "Keep watching" blocks it, and what
watching costs in requests, on the tuned host as shipped (a poll every workers_watch_poll_s,
a full rescan every workers_watch_rescan_s).

One person blocks a 3,000-follower target with watching on; after the first pass the target
gains 10 followers a minute for 30 minutes (the fake's arrivals). The agent (agent/
watchwork.py) reports each newcomer's wait from its follow to its block record, the person's
calls by method over the window per hour, and a full rescan's calls. The summary goes to
bench/results/<date>-<commit>-watch/ (summary.md and summary.json, in git; the raw trace
stays on the machine) and replaces the latest watching table in docs/benchmarks.md.

    python -m bench.watch [--minutes 30] [--per-minute 10] [--followers 3000] [--reuse] [--keep]
"""

import argparse
import json
import os
import time

from . import docs
from . import run as bench

HOST = bench.HOSTS["tuned"]
LATEST = "latest-watch"


def report(result, meta):
    """The run's summary in Markdown: the waits, then the calls."""
    waits, per_hour = result["waits"], result["calls_per_hour"]
    poll_s, rescan_s = result["poll_s"], result["rescan_s"]
    minutes = result["window_s"] / 60
    lines = [
        f"### Watching {meta['stamp']} commit {meta['commit']}",
        "",
        f"Tuned host, as shipped: a poll every {poll_s} s, a full rescan every"
        f" {rescan_s / 3600:g} h (workers_watch_poll_s, workers_watch_rescan_s)."
        f" One person blocks @{result['target']}"
        f" ({result['followers']:,} followers) with watching on; after the first pass"
        f" ({meta['first_pass_s']:.0f} s) {result['per_minute']:g} new followers a minute for"
        f" {minutes:.1f} min. Per-account write limits lifted (at this rate they never bind:"
        f" 1,800 of 5,000 points an hour). Machine: {meta['machine']}.",
        "",
        "| newcomers arrived | blocked | missed | wait median | p90 | max | min |",
        "|---|---|---|---|---|---|---|",
        f"| {result['arrived']:,} | {result['blocked']:,} | {result['missed']:,} |"
        f" {_s(waits.get('median_s'))} | {_s(waits.get('p90_s'))} | {_s(waits.get('max_s'))} |"
        f" {_s(waits.get('min_s'))} |",
        "",
        f"Calls for the person while followers arrived ({minutes:.1f} min), per hour:",
        "",
        "| method | calls | per hour |",
        "|---|---|---|",
    ]
    for method, count in sorted(result["calls"].items()):
        lines.append(f"| `{method}` | {count:,} | {per_hour[method]:,} |")
    rescan = result["rescan_calls"]
    total = sum(rescan.values())
    lines += [
        "",
        f"A full rescan (and the poll that started it): {total:,} calls"
        f" ({', '.join(f'{n} `{m}`' for m, n in sorted(rescan.items())) or 'none'}),"
        f" {total * 3600 / rescan_s:.1f} an hour spread over its {rescan_s / 3600:g} h."
        f" Blocks on the network: {result['distinct_blocked']:,} accounts,"
        f" {result['duplicates']:,} made twice. The campaign at the end:"
        f" {result['campaign']['status']}, {result['campaign']['watched']:,} watched,"
        f" {result['campaign']['acted']:,} blocked.",
    ]
    return "\n".join(lines) + "\n"


def docs_parts(text, meta, result, results):
    """What a run puts in docs/benchmarks.md: ({section: body}, its line in the list of runs)."""
    summary = docs.link(results, "summary.md")
    waits = result["waits"]
    entry = (
        f"- {meta['stamp']} commit {meta['commit']}: watching, {result['per_minute']:g} new"
        f" followers a minute; wait median {_s(waits.get('median_s'))},"
        f" max {_s(waits.get('max_s'))}, {result['missed']:,} missed: {summary}"
    )
    return {LATEST: f"{text.rstrip()}\n\nThis table: {summary}."}, entry


def _s(value):
    return "—" if value is None else f"{value:.0f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.watch", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--per-minute", type=int, default=10)
    parser.add_argument("--followers", type=int, default=3000)
    parser.add_argument("--keep", action="store_true", default=os.environ.get("BENCH_KEEP") == "1")
    parser.add_argument(
        "--reuse", action="store_true", default=os.environ.get("BENCH_REUSE") == "1"
    )
    args = parser.parse_args(argv)
    docs.check(bench.DOCS, [LATEST])
    out = bench.results_dir("watch", smoke=False)
    bench.log(f"results in {out}")
    meta = {"machine": bench.machine(), "commit": bench.commit()}
    run_id = f"w{int(time.time()) % 100000}"
    arguments = ["watch", "--run-id", run_id, "--minutes", str(args.minutes)]
    arguments += ["--per-minute", str(args.per_minute), "--followers", str(args.followers)]
    with bench.bench_hosts([HOST], out, False, args.keep, args.reuse):
        bench.install_agent(HOST)
        timeout = args.minutes * 60 + 3600
        records = bench.agent(HOST, arguments, out / "raw-watch.jsonl.gz", timeout)
    result = next(r for r in records if r.get("type") == "watch-result")
    meta["first_pass_s"] = next(r for r in records if r.get("type") == "first-pass")["seconds"]
    meta["stamp"] = time.strftime("%Y-%m-%d %H:%M")
    text = report(result, meta)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "result": result}, indent=1))
    print(text)
    docs.update(bench.DOCS, *docs_parts(text, meta, result, out.relative_to(bench.REPO)))
    return 1 if result["missed"] or result["duplicates"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
