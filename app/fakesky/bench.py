"""Scale benchmark of the fake: prints server time for pages of 100 followers of a 200,000-follower
target, seen by an account that holds 200,000 blocks. Prints figures; asserts nothing.

    cd app && python3 -m fakesky.bench [--followers 200000] [--blocks 200000] [--pages 200]

Server time is what the fake reports in its Server-Timing header: the request's work under
the lock, without the HTTP round trip (printed beside it).
"""

import argparse
import http.client
import json
import statistics
import time
from urllib.parse import urlencode

from .config import Config
from .server import serve

BLOCK = "app.bsky.graph.block"


class Client:
    def __init__(self, url):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        self.token = None

    def call(self, method, nsid, params=None, body=None):
        path = f"/xrpc/{nsid}" + (f"?{urlencode(params, doseq=True)}" if params else "")
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{nsid}: {response.status} {raw[:200]!r}")
        server_ms = float(response.getheader("Server-Timing").split("dur=")[1])
        return json.loads(raw) if raw else {}, server_ms, elapsed * 1000


def followers(client, actor, pages):
    """Walk pages of 100 followers; returns (server ms list, round-trip ms list, followers seen)."""
    server, round_trip, seen, cursor = [], [], 0, None
    for _ in range(pages):
        params = {"actor": actor, "limit": 100}
        if cursor:
            params["cursor"] = cursor
        body, server_ms, trip_ms = client.call("GET", "app.bsky.graph.getFollowers", params)
        server.append(server_ms)
        round_trip.append(trip_ms)
        seen += len(body["followers"])
        cursor = body.get("cursor")
        if not cursor:
            break
    return server, round_trip, seen


def _apply(client, did, writes):
    started = time.perf_counter()
    for start in range(0, len(writes), 200):
        body = {"repo": did, "writes": writes[start : start + 200]}
        client.call("POST", "com.atproto.repo.applyWrites", body=body)
    return time.perf_counter() - started


def block_all(client, did, subjects):
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    creates = [
        {
            "$type": "com.atproto.repo.applyWrites#create",
            "collection": BLOCK,
            "value": {"$type": BLOCK, "subject": subject, "createdAt": now},
        }
        for subject in subjects
    ]
    return _apply(client, did, creates)


def unblock(client, did, rkeys):
    deletes = [
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": BLOCK, "rkey": rkey}
        for rkey in rkeys
    ]
    return _apply(client, did, deletes)


def report(label, server, round_trip, seen):
    server_sorted = sorted(server)
    p95 = server_sorted[max(0, int(len(server_sorted) * 0.95) - 1)]
    print(
        f"  {label}: {len(server)} pages, {seen} followers shown;"
        f" server ms median {statistics.median(server):.2f}, p95 {p95:.2f},"
        f" max {max(server):.2f}; round trip ms median {statistics.median(round_trip):.2f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m fakesky.bench", description=__doc__)
    parser.add_argument("--followers", type=int, default=200_000)
    parser.add_argument("--blocks", type=int, default=200_000)
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args(argv)

    config = Config(rate_limits_enabled=False, indexing_delay_s=0, login_min_ms=0)
    server, url = serve("127.0.0.1", 0, config)
    fake = server.fake
    try:
        target = fake.add_target("bench", args.followers)
        elsewhere = fake.add_target("elsewhere", args.blocks)
        account = fake.add_account("bench.fake.test", "bench-pass")
        client = Client(url)
        session, _, _ = client.call(
            "POST",
            "com.atproto.server.createSession",
            body={"identifier": account.handle, "password": "bench-pass"},
        )
        client.token = session["accessJwt"]
        print(
            f"fakesky scale benchmark: target {target.handle} ({args.followers:,} followers),"
            f" viewer holding {args.blocks:,} blocks, pages of 100"
        )
        report("no blocks held", *followers(client, target.did, args.pages))

        unrelated = [elsewhere.follower(i)[0] for i in range(args.blocks)]
        seconds = block_all(client, account.did, unrelated)
        print(f"  (wrote {len(account.repo):,} blocks in {seconds:.1f} s through applyWrites)")
        report("blocks of other accounts", *followers(client, target.did, args.pages))

        unblock(client, account.did, list(account.repo.records)[: args.blocks // 2])
        half = [target.follower(i)[0] for i in range(0, args.followers, 2)]
        block_all(client, account.did, half[: args.blocks // 2])
        report(
            f"every other follower blocked ({len(account.repo):,} blocks)",
            *followers(client, target.did, args.pages),
        )

        unblock(client, account.did, list(account.repo.records))
        block_all(client, account.did, [target.follower(i)[0] for i in range(args.blocks)])
        report(
            f"the first {args.blocks:,} followers blocked (pages refilled 10 times, empty)",
            *followers(client, target.did, min(args.pages, 50)),
        )
        server_ms = client.call("GET", "app.bsky.graph.getBlocks", {"limit": 100})[1]
        print(f"  getBlocks, 100 of {len(account.repo):,}: server ms {server_ms:.2f}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
