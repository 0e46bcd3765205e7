"""watch: what "Keep watching" costs and how quickly it answers, on a real host.

One person blocks a target's followers with watching on. Once the first pass is in (every
follower found so far blocked, the campaign polling), the target gains followers at a set
rate (the fake's arrivals) for a window; then the arrivals stop and the campaign is given
time to catch the last ones. Every newcomer's wait is the time from its follow (the fake's
clock: arrival j at start + j * 60 / per_minute s) to its block record (the app's
ActionRecord.created_at, written once applyWrites answered). The requests are the fake's
per-account counts by method over the window, per hour. Last, a full rescan is started at
once (it is due every SHOESTRING_WATCH_RESCAN_S) and its requests counted on their own.
"""

import statistics
import time
from pathlib import Path

from .fake import Fake, target_handle
from .host import Psql, env_setting
from .load import Load

POLL_EVERY_S = 5
SETTINGS = ("SHOESTRING_WATCH_POLL_S", "SHOESTRING_WATCH_RESCAN_S")


def watch_settings(folder=Path("/etc/shoestring")):
    """The watch settings the worker pools run with, from their settings files."""
    values = {name: env_setting(name, folder, "worker-*.env") for name in SETTINGS}
    found = {name: int(value) for name, value in values.items() if (value or "").isdigit()}
    missing = [name for name in SETTINGS if name not in found]
    if missing:
        raise RuntimeError(f"no worker pool's settings name {', '.join(missing)}")
    return found


def add_commands(commands):
    p = commands.add_parser("watch", help="a watched campaign under a steady stream of arrivals")
    p.add_argument("--run-id", required=True)
    p.add_argument("--followers", type=int, default=3000, help="the target's own followers")
    p.add_argument("--per-minute", type=int, default=10, help="new followers a minute")
    p.add_argument("--minutes", type=float, default=30, help="how long followers arrive")
    p.add_argument("--drain-s", type=float, default=900, help="the most to wait for the last")
    p.add_argument("--first-pass-s", type=float, default=900)


def _campaign(psql, campaign_id):
    row = psql.query(
        "SELECT status, found, acted, skipped, failed, watched, watching_since IS NOT NULL,"  # noqa: S608
        " cursor, rescanning, error FROM blocking_campaign"
        f" WHERE id = {int(campaign_id)}"
    )[0]
    keys = ("status", "found", "acted", "skipped", "failed", "watched")
    state = dict(zip(keys, [row[0], *map(int, row[1:6])], strict=True))
    state.update(watching=row[6] == "t", cursor=row[7], rescanning=row[8] == "t", error=row[9])
    return state


def _wait(what, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_EVERY_S)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")


def _blocked_newcomers(psql, campaign_id, prefix):
    """{arrival index: epoch seconds of its block record} for the campaign's newcomers."""
    rows = psql.query(
        "SELECT subject_handle, extract(epoch FROM created_at) FROM blocking_actionrecord"  # noqa: S608
        f" WHERE campaign_id = {int(campaign_id)} AND kind = 'block'"
        f" AND subject_handle LIKE 'nf%'"
    )
    blocked = {}
    for handle, at in rows:
        index, _, label = handle[2:].partition(".")
        if label == prefix and index.isdigit():
            blocked[int(index)] = float(at)
    return blocked


def waits(started, per_minute, first, arrived, blocked):
    """Each newcomer's seconds from its arrival to its block, in arrival order, and the
    indexes of those that arrived and were not blocked. Arrivals `first` up to `arrived`
    are this run's (a kept host's target may have had some before), `first` at `started`."""
    every = 60.0 / per_minute
    ours = range(first, arrived)
    seconds = [blocked[j] - (started + (j - first) * every) for j in ours if j in blocked]
    missed = [j for j in ours if j not in blocked]
    return seconds, missed


def figures(seconds):
    if not seconds:
        return {"n": 0}
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "median_s": round(statistics.median(ordered), 1),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "max_s": round(ordered[-1], 1),
        "min_s": round(ordered[0], 1),
    }


def per_hour(before, after, seconds):
    """Calls a method made between two of the fake's counts, scaled to an hour."""
    methods = sorted(set(before) | set(after))
    counts = {m: after.get(m, 0) - before.get(m, 0) for m in methods}
    counts = {m: n for m, n in counts.items() if n}
    return counts, {m: round(n * 3600 / seconds, 1) for m, n in counts.items()}


def run(args, emit):
    settings = watch_settings()
    fake = Fake()
    # The per-account write budget is Bluesky's; at 10 newcomers a minute it never binds
    # (600 blocks an hour: 1,800 of 5,000 points). Lifted, the first pass is quick.
    applied, missing = fake.lift_limits()
    target = target_handle("watch", args.followers)  # a new person each run: all new to them
    work = Load(lambda record: None, args.run_id, 1, 0, 0, [[target]])
    work.prepare()
    person = work.people[0]
    psql, campaign_id, streaming = Psql(), None, False
    try:
        campaign_id, _ = person.browser.start_campaign(target, duration="1", watch=True)
        started = time.monotonic()
        first = _wait(
            "the first pass",
            lambda: (
                (c := _campaign(psql, campaign_id))["watching"]
                and c["acted"] + c["skipped"] + c["failed"] >= c["found"]
                and c
            ),
            args.first_pass_s,
        )
        emit({"type": "first-pass", "seconds": round(time.monotonic() - started, 1), **first})

        before = fake.state(person.handle)["calls_by_method"]
        stream_started = time.time()
        # The first of this run's arrivals happens at once: the stream counts it already.
        streaming = True
        first = fake.arrivals(target, "followers", args.per_minute)["arrived"] - 1
        window_s = args.minutes * 60
        end = time.monotonic() + window_s
        while time.monotonic() < end:
            time.sleep(min(30, max(0.0, end - time.monotonic())))
            emit({"type": "sample", "t": time.time(), **_campaign(psql, campaign_id)})
        after = fake.state(person.handle)["calls_by_method"]
        measured_s = time.time() - stream_started
        stream = fake.arrivals(target, "followers", 0)
        streaming = False
        arrived = stream["arrived"]

        _wait(
            "the last newcomers",
            lambda: (
                sum(j >= first for j in _blocked_newcomers(psql, campaign_id, target))
                >= arrived - first
            ),
            args.drain_s,
        )
        blocked = _blocked_newcomers(psql, campaign_id, target)
        seconds, missed = waits(stream_started, args.per_minute, first, arrived, blocked)

        # A rescan, made due now rather than in SHOESTRING_WATCH_RESCAN_S: the next poll
        # starts it, and once it is over the next one is due hours away. Its count
        # includes that poll.
        rescan_before = fake.state(person.handle)["calls_by_method"]
        psql.query(f"UPDATE blocking_campaign SET rescan_at = now() WHERE id = {int(campaign_id)}")  # noqa: S608
        _wait(
            "a rescan",
            lambda: (
                psql.value(
                    "SELECT rescan_at > now() + interval '1 hour' AND NOT rescanning"  # noqa: S608
                    " AND cursor = '~watching' FROM blocking_campaign"
                    f" WHERE id = {int(campaign_id)}"
                )
                == "t"
            ),
            900,
        )
        rescan_after = fake.state(person.handle)["calls_by_method"]
        final = _campaign(psql, campaign_id)
        truth = fake.account(person.handle)
    finally:
        # A kept host neither gains followers nor goes on watching for this run (its next
        # poll ends the watch), whatever stopped it.
        try:
            if streaming:
                fake.arrivals(target, "followers", 0)
            if campaign_id is not None:
                psql.query(
                    "UPDATE blocking_campaign SET watch_until = now()"  # noqa: S608
                    f" WHERE id = {int(campaign_id)}"
                )
        finally:
            psql.close()
    counts, hourly = per_hour(before, after, measured_s)
    rescan, _ = per_hour(rescan_before, rescan_after, 3600)
    return {
        "type": "watch-result",
        "poll_s": settings["SHOESTRING_WATCH_POLL_S"],
        "rescan_s": settings["SHOESTRING_WATCH_RESCAN_S"],
        "target": target,
        "followers": args.followers,
        "per_minute": args.per_minute,
        "window_s": round(measured_s, 1),
        "fake_applied": applied,
        "fake_missing": missing,
        "arrived": arrived - first,
        "blocked": len(seconds),
        "missed": len(missed),
        "waits": figures(seconds),
        "calls": counts,
        "calls_per_hour": hourly,
        "rescan_calls": rescan,
        "campaign": final,
        "duplicates": truth["duplicates"],
        "distinct_blocked": truth["distinct"],
    }
