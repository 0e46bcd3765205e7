"""python3 -m agent COMMAND: the benchmark's side inside a bench host (run as root there).

run          prepare people, then sample idle, under load, and after a final flush
fault-load   people with campaigns (and blocks being undone) for one fault of the suite
fault-check  wait until that fault's work is done, then the truth from the fake
watch        a watched campaign under a steady stream of new followers (watchwork.py)
"""

import argparse
import json
import sys
import threading
import time

from . import faultwork, host, watchwork
from .fake import Fake, FakeError
from .load import Load
from .sampler import Sampler

_print_lock = threading.Lock()


def emit(record):
    with _print_lock:
        sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def _devices(text):
    """ "/var=loop3,/var/lib/postgresql=loop4" -> {"/var": "loop3", ...}"""
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    return {mount: device for mount, device in pairs}


def run(args):
    fake = Fake()
    settings = fake.settings()
    if args.lift_limits:
        applied, missing = fake.lift_limits()
    else:
        applied, missing = fake.compress(args.compression)
    emit(
        {
            "type": "start",
            "t": time.time(),
            "args": vars(args),
            "fake_settings": settings,
            "fake_applied": applied,
            "fake_missing": missing,
        }
    )
    plans = [args.targets.split(",")] * args.people if args.targets else None
    load = Load(emit, args.run_id, args.people, args.clickers, args.seed, plans)
    started = time.monotonic()
    load.prepare()
    emit({"type": "prepared", "t": time.time(), "seconds": round(time.monotonic() - started, 1)})

    sampler = Sampler(args.devices, emit, lambda: load.counters, broker=not args.no_broker)
    try:
        host.flush(sampler.psql, args.devices)
        time.sleep(2)
        sampler.run("idle", args.idle_s)
        threads = load.run(args.seconds, args.stagger_s, args.click_every_s, args.read_every_s)

        def done(record):
            pg = record.get("pg") or {}
            return (
                args.until_done
                and load.counters["campaigns_started"] >= args.people
                and pg.get("campaigns_running") == 0
            )

        sampler.run("load", args.seconds, until=done)
        load.stop.set()
        for thread in threads:
            thread.join(timeout=150)
        # What the page cache and Postgres still hold was written by the run: count it.
        host.flush(sampler.psql, args.devices)
        sampler.run("flush", args.flush_s)
    finally:
        load.stop.set()
        sampler.close()
    for person in load.people + load.clickers:
        try:
            truth = fake.account(person.handle)
        except (FakeError, OSError) as error:  # the fake lost its state: say so, keep the run
            emit({"type": "truth", "person": person.username, "error": str(error)})
            continue
        truth.pop("blocked")
        emit({"type": "truth", "person": person.username, "handle": person.handle, **truth})
    emit({"type": "end", "t": time.time()})


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m agent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("run")
    p.add_argument(
        "--devices",
        type=_devices,
        default="",
        help="counted devices, /var=loop3[,...]; none on a host that is not a bench host",
    )
    p.add_argument("--run-id", required=True, help="prefix of the people's names")
    p.add_argument("--people", type=int, default=4)
    p.add_argument("--clickers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--idle-s", type=float, default=10)
    p.add_argument("--flush-s", type=float, default=5)
    p.add_argument("--stagger-s", type=float, default=30)
    p.add_argument("--click-every-s", type=float, default=3)
    p.add_argument("--read-every-s", type=float, default=2)
    p.add_argument("--compression", type=float, default=1.0)
    p.add_argument("--lift-limits", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", default="", help="every person's targets, comma-separated")
    p.add_argument("--until-done", action="store_true", help="stop when every campaign is done")
    p.add_argument("--no-broker", action="store_true", help="a host with no Redis broker")
    faultwork.add_commands(commands)
    watchwork.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
    elif args.command == "watch":
        emit(watchwork.run(args, emit))
    else:
        faultwork.main(args, emit)


if __name__ == "__main__":
    main()
