"""The work one fault of the fault suite lands on, and the truth about it afterwards.

fault-load: a few people start block campaigns (distinct targets, so every expected block is
known), and one more person's earlier blocks are being undone ("Unblock everybody"); it
returns once work is in flight. The controller then injects the fault and restores the
host. fault-check: waits until the work is finished (or a deadline), then asks the fake
for what was really made, duplicated and undone, and Postgres for rows left unfinished.
"""

import json
import time
from pathlib import Path

from .fake import Fake, target_handle
from .host import Psql, sql_list
from .load import Load, _name, followers_of

STATE_DIR = Path("/opt/shoestring-bench/state")  # the container's root disk, not /var
TRACE_EVERY_S = 30  # how often fault-check records what each person's work waits on


def add_commands(commands):
    p = commands.add_parser("fault-load")
    p.add_argument("--run-id", required=True)
    p.add_argument("--people", type=int, default=3)
    p.add_argument("--followers", type=int, default=3000)
    p.add_argument("--undo-followers", type=int, default=1000)
    p.add_argument("--compression", type=float, default=1.0)
    p.add_argument("--in-flight", type=float, default=0.1, help="fraction done before returning")
    p = commands.add_parser("fake-faults", help="arm the fake's fault hooks with this JSON")
    p.add_argument("values", type=json.loads)
    p = commands.add_parser("fault-check")
    p.add_argument("--run-id", required=True)
    p.add_argument("--deadline-s", type=float, default=900)


def main(args, emit):
    if args.command == "fault-load":
        emit(load(args))
    elif args.command == "fake-faults":
        state = Fake().faults(args.values)
        emit({"type": "fake-faults", "supported": state is not None, **(state or {})})
    else:
        emit(check(args, emit))


def _query(psql, sql, attempts=30):
    """Ask Postgres, waiting through a restart (crash recovery) for up to ~a minute."""
    for _ in range(attempts):
        try:
            return psql.query(sql)
        except RuntimeError:
            time.sleep(2)
    raise RuntimeError(f"Postgres did not answer: {sql[:60]}")


def _campaign_rows(psql, ids):
    rows = _query(
        psql,
        "SELECT id, status, acted, found, error FROM blocking_campaign"  # noqa: S608
        f" WHERE id IN {sql_list(ids)}",
    )
    return {
        int(r[0]): {"status": r[1], "acted": int(r[2]), "found": int(r[3]), "error": r[4]}
        for r in rows
    }


def load(args):
    fake = Fake()
    fake.compress(args.compression)
    plans = [[target_handle(_name("fault", i), args.followers)] for i in range(args.people)]
    plans.append([target_handle("undo", args.undo_followers)])
    work = Load(lambda record: None, args.run_id, args.people + 1, 0, 0, plans)
    work.prepare()
    undoer, people = work.people[-1], work.people[:-1]
    psql = Psql()
    try:
        # The blocks to be undone during the fault exist first.
        undo_campaign, _ = undoer.browser.start_campaign(undoer.targets[0])
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if _campaign_rows(psql, [undo_campaign])[undo_campaign]["status"] != "running":
                break
            time.sleep(1)
        undoer.browser.undo_all()
        campaigns = {p.handle: p.browser.start_campaign(p.targets[0])[0] for p in people}
        wanted = args.in_flight * args.followers * len(people)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rows = _campaign_rows(psql, list(campaigns.values()))
            if sum(r["acted"] for r in rows.values()) >= wanted:
                break
            time.sleep(0.5)
    finally:
        psql.close()
    state = {
        "type": "fault-load",
        "run_id": args.run_id,
        "people": [
            {
                "username": p.username,
                "handle": p.handle,
                "campaign": campaigns[p.handle],
                "expected": followers_of(p.targets[0]),
            }
            for p in people
        ],
        "undoer": {
            "username": undoer.username,
            "handle": undoer.handle,
            "due": args.undo_followers,
        },
        "loaded_at": time.time(),
    }
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / f"{args.run_id}.json").write_text(json.dumps(state))
    return state


def _unfinished_rows(psql, usernames):
    rows = _query(
        psql,
        "SELECT b.state, count(*) FROM blocking_batch b"  # noqa: S608
        " JOIN auth_user u ON u.id = b.owner_id"
        f" WHERE u.username IN {sql_list(usernames)} GROUP BY b.state",
    )
    return {state: int(count) for state, count in rows}


_PACING_SQL = """
SELECT u.username, a.rate_limited_until, a.write_points_left, a.write_window_reset_at,
       (SELECT min(b.not_before) FROM blocking_batch b
         WHERE b.owner_id = u.id AND b.state = 'ready'),
       (SELECT min(b.queued_at) FROM blocking_batch b
         WHERE b.owner_id = u.id AND b.state = 'queued')
FROM auth_user u LEFT JOIN blocking_linkedaccount a ON a.user_id = u.id
WHERE u.username IN {names}
"""


def _trace(psql, fake, state, usernames):
    """What each person's work waits on, as the app and the network see it: the app's
    pacing columns and oldest rows, the fake's counters and its newest refusal."""
    handles = {p["username"]: p["handle"] for p in [*state["people"], state["undoer"]]}
    rows = _query(psql, _PACING_SQL.format(names=sql_list(usernames)))
    people = {}
    for username, limited_until, points_left, reset_at, ready_due, queued_at in rows:
        people[username] = {
            "rate_limited_until": limited_until or None,
            "write_points_left": points_left or None,
            "write_window_reset_at": reset_at or None,
            "oldest_ready_due": ready_due or None,
            "oldest_queued_at": queued_at or None,
            "fake": fake.counters(handles[username]),
        }
    return {"type": "fault-trace", "at": time.time(), "people": people}


def check(args, emit):
    state = json.loads((STATE_DIR / f"{args.run_id}.json").read_text())
    fake, psql = Fake(), Psql()
    people, undoer = state["people"], state["undoer"]
    usernames = [p["username"] for p in people] + [undoer["username"]]
    started = time.monotonic()
    recovered_after, traced = None, 0.0
    try:
        while time.monotonic() - started < args.deadline_s:
            if time.monotonic() - traced >= TRACE_EVERY_S:
                emit(_trace(psql, fake, state, usernames))
                traced = time.monotonic()
            campaigns = _campaign_rows(psql, [p["campaign"] for p in people])
            running = [c for c in campaigns.values() if c["status"] == "running"]
            unfinished = _unfinished_rows(psql, usernames)
            undo_left = fake.block_count(undoer["handle"])
            if not running and not unfinished and undo_left == 0:
                recovered_after = round(time.monotonic() - started, 1)
                break
            time.sleep(2)
        campaigns = _campaign_rows(psql, [p["campaign"] for p in people])
        unfinished = _unfinished_rows(psql, usernames)
        emit(_trace(psql, fake, state, usernames))
    finally:
        psql.close()
    expected = made = missing = duplicated = 0
    for person in people:
        truth = fake.account(person["handle"])
        expected += person["expected"]
        made += truth["distinct"]
        missing += max(0, person["expected"] - truth["distinct"])
        duplicated += truth["duplicates"]
    undo_left = fake.block_count(undoer["handle"]) or 0
    return {
        "type": "fault-result",
        "run_id": state["run_id"],
        "blocks_expected": expected,
        "blocks_made": made,
        "blocks_missing": missing,
        "blocks_duplicated": duplicated,
        "unblocks_due": undoer["due"],
        "unblocks_done": undoer["due"] - undo_left,
        "rows_ready": unfinished.get("ready", 0),
        "rows_queued": unfinished.get("queued", 0),
        "campaigns": {str(k): v for k, v in campaigns.items()},
        "recovered_after_s": recovered_after,
        "deadline_s": args.deadline_s,
    }
