"""Arrivals: new followers and engagers keep coming after a pile-on's first wave, newest first
at a set rate, some backdated to the end of the list (arrivals.py), over bare HTTP. The fake
tells time by the real clock, so these streams run fast (a newcomer every 10 or 100 ms)."""

import pickle
import time
from datetime import datetime

import pytest
from conftest import free_port, wait_until

from fakesky.fake import FakeBluesky
from fakesky.tests.conftest import Xrpc, create
from fakesky.tests.test_service import refusal, start, stop

RKEY = "3lpileon2abcd"
EVERY_100_MS = 600  # per minute
EVERY_10_MS = 6000


def arrived(fakesky, subject, kind="followers"):
    streams = fakesky.state()["arrivals"]
    return next(s["arrived"] for s in streams if s["subject"] == subject and s["kind"] == kind)


def wait_for(fakesky, subject, count, kind="followers"):
    return wait_until(
        lambda: arrived(fakesky, subject, kind) >= count and arrived(fakesky, subject, kind),
        10,
        interval=0.02,
        message=f"{count} {kind} of {subject} to arrive",
    )


def short(entries):
    """The first label of each handle: nf3 (newcomer 3), f0 (follower 0), nl2, l0 ..."""
    return [entry["handle"].split(".")[0] for entry in entries]


def followers(xrpc, actor, cursor=None, limit=100):
    params = {"actor": actor, "limit": limit}
    if cursor:
        params["cursor"] = cursor
    response = xrpc.get("app.bsky.graph.getFollowers", **params)
    assert response.status_code == 200, response.text
    return response.json()


def full_pass(xrpc, actor, limit, between=lambda: None):
    """Every follower by cursor, calling between() after each page read."""
    seen, cursor = [], None
    while True:
        page = followers(xrpc, actor, cursor, limit)
        seen += short(page["followers"])
        cursor = page.get("cursor")
        if not cursor:
            return seen
        between()


def test_new_followers_arrive_newest_first_at_the_rate(fakesky, xrpc):
    before = time.monotonic()
    answer = fakesky.arrivals("crowd-30.fake.test", "followers", EVERY_100_MS)
    set_at = time.monotonic()
    assert answer["arrived"] == 1, "the first newcomer arrives at once"
    assert answer["handles"] == "nf<j>.crowd-30.fake.test"
    wait_for(fakesky, "crowd-30.fake.test", 4)
    read_from = time.monotonic()
    count = xrpc.get("app.bsky.actor.getProfile", actor="crowd-30.fake.test").json()
    read_to = time.monotonic()
    newcomers = count["followersCount"] - 30
    # Newcomer j arrives j * 100 ms after the hook answered (between before and set_at).
    assert int((read_from - set_at) * 10) + 1 <= newcomers <= int((read_to - before) * 10) + 1

    page = followers(xrpc, "crowd-30.fake.test", limit=100)
    listed = short(page["followers"])
    shown = len(listed) - 30
    assert shown >= newcomers
    assert listed == [f"nf{j}" for j in reversed(range(shown))] + [f"f{i}" for i in range(30)]
    # One page at a time: the cursors carry each follow's time, 100 ms apart.
    first = followers(xrpc, "crowd-30.fake.test", limit=1)
    second = followers(xrpc, "crowd-30.fake.test", first["cursor"], limit=1)
    assert int(first["cursor"].split("__")[0]) - int(second["cursor"].split("__")[0]) == 100

    did = fakesky.did("nf1.crowd-30.fake.test")
    profile = xrpc.get("app.bsky.actor.getProfile", actor=did).json()
    assert (profile["handle"], profile["followersCount"]) == ("nf1.crowd-30.fake.test", 0)
    not_yet = xrpc.get("app.bsky.actor.getProfile", actor="nf9999.crowd-30.fake.test")
    assert not_yet.json()["message"] == "Profile not found"


def test_a_pass_while_followers_arrive_has_no_repeats_or_gaps(fakesky, xrpc):
    """A newcomer lands above the cursor (this pass misses it) or, backdated, at the end (this
    pass meets it there); the target's own followers come once each, in order."""
    fakesky.arrivals("crowd-400.fake.test", "followers", EVERY_10_MS, backdate_every=4)
    wait_for(fakesky, "crowd-400.fake.test", 8)

    def some_arrive():
        count = arrived(fakesky, "crowd-400.fake.test")
        wait_for(fakesky, "crowd-400.fake.test", count + 2)

    seen = full_pass(xrpc, "crowd-400.fake.test", 37, some_arrive)
    assert len(seen) == len(set(seen))
    old = [label for label in seen if label.startswith("f")]
    assert old == [f"f{i}" for i in range(400)]
    top = seen[: seen.index("f0")]
    tail = seen[seen.index("f399") + 1 :]
    on_time = [int(label[2:]) for label in top]
    assert on_time == sorted(on_time, reverse=True)
    assert all((j + 1) % 4 for j in on_time)
    backdated = [int(label[2:]) for label in tail]
    assert backdated == list(range(3, 4 * len(backdated), 4)), "every 4th, the newest last"
    assert backdated[-1] > max(on_time), "some arrived during the pass and were met at its end"


def test_backdated_followers_end_the_list_and_miss_the_first_page(fakesky, xrpc):
    fakesky.arrivals("crowd-150.fake.test", "followers", EVERY_10_MS, backdate_every=2)
    wait_for(fakesky, "crowd-150.fake.test", 6)
    first = short(followers(xrpc, "crowd-150.fake.test", limit=100)["followers"])
    assert not any(label.startswith("nf") and int(label[2:]) % 2 for label in first)
    fakesky.arrivals("crowd-150.fake.test", "followers", 0)  # a fixed list to page through
    whole = full_pass(xrpc, "crowd-150.fake.test", 100)
    assert (
        full_pass(xrpc, "crowd-150.fake.test", 1)
        == whole
        == full_pass(xrpc, "crowd-150.fake.test", 7)
    )
    tail = whole[whole.index("f149") + 1 :]
    assert tail[:3] == ["nf1", "nf3", "nf5"]
    assert tail == [f"nf{j}" for j in range(1, 2 * len(tail), 2)]
    assert fakesky.state()["arrivals"][0]["backdated"] >= len(tail)
    profile = xrpc.get("app.bsky.actor.getProfile", actor="crowd-150.fake.test").json()
    assert profile["followersCount"] >= 150 + 2 * len(tail), "backdated ones count too"


def test_new_likes_reposts_quotes_and_replies_of_a_post(fakesky, xrpc):
    uri = fakesky.post("crowd-10.fake.test", RKEY, likes=20, reposts=4, quotes=3, replies=9)["uri"]
    by_handle = f"at://crowd-10.fake.test/app.bsky.feed.post/{RKEY}"
    answer = fakesky.arrivals(by_handle, "likes", EVERY_10_MS, backdate_every=3)
    assert (answer["subject"], answer["handles"]) == (uri, f"nl<j>.{RKEY}.crowd-10.fake.test")
    for kind in ("reposts", "quotes", "replies"):
        fakesky.arrivals(uri, kind, EVERY_10_MS)
    wait_for(fakesky, uri, 6, kind="likes")
    wait_for(fakesky, uri, 3, kind="replies")

    likes = xrpc.get("app.bsky.feed.getLikes", uri=uri, limit=100).json()
    labels = short(like["actor"] for like in likes["likes"])
    newest = int(labels[0][2:])
    on_time = [f"nl{j}" for j in reversed(range(newest + 1)) if (j + 1) % 3]
    assert labels[: len(on_time)] == on_time
    assert labels[len(on_time) : len(on_time) + 20] == [f"l{i}" for i in range(20)]
    assert labels[len(on_time) + 20 :][:2] == ["nl2", "nl5"], "backdated: at the end"
    oldest, backdated = likes["likes"][len(on_time) + 19 : len(on_time) + 21]
    assert backdated["createdAt"][:4] == str(int(oldest["createdAt"][:4]) - 1), "a year older"
    indexed = datetime.fromisoformat(backdated["indexedAt"].replace("Z", "+00:00"))
    assert abs(indexed.timestamp() - time.time()) < 60, "indexed as it arrived: now"
    assert likes["likes"][0]["createdAt"] == likes["likes"][0]["indexedAt"]

    [post] = xrpc.get("app.bsky.feed.getPosts", uris=[uri]).json()["posts"]
    assert post["likeCount"] >= 20 + newest + 1
    assert post["repostCount"] >= 4 + 3
    reposters = xrpc.get("app.bsky.feed.getRepostedBy", uri=uri, limit=1).json()["repostedBy"]
    assert short(reposters)[0].startswith("nr")
    quote = xrpc.get("app.bsky.feed.getQuotes", uri=uri, limit=1).json()["posts"][0]
    assert quote["author"]["handle"].startswith("nq")
    assert quote["embed"]["record"]["uri"] == uri
    replies = xrpc.get("app.bsky.feed.getPostThread", uri=uri, depth=1).json()["thread"]
    texts = [reply["post"]["record"]["text"] for reply in replies["replies"]]
    newcomers = [text for text in texts if text.startswith("Reply n")]
    assert texts[: len(newcomers)] == newcomers, "newest first: the newcomers on top"
    assert replies["post"]["replyCount"] == 5 + len(newcomers) == len(texts)
    newest_reply = replies["replies"][0]["post"]
    fetched = xrpc.get("app.bsky.feed.getPosts", uris=[newest_reply["uri"]]).json()["posts"]
    assert fetched[0]["record"]["reply"]["parent"]["uri"] == uri


def test_per_minute_zero_stops_arrivals_and_a_new_rate_goes_on_from_there(fakesky, xrpc):
    fakesky.arrivals("crowd-5.fake.test", "followers", EVERY_10_MS)
    wait_for(fakesky, "crowd-5.fake.test", 3)
    stopped = fakesky.arrivals("crowd-5.fake.test", "followers", 0)["arrived"]
    time.sleep(0.05)  # five would have arrived at the old rate
    assert arrived(fakesky, "crowd-5.fake.test") == stopped
    listed = short(followers(xrpc, "crowd-5.fake.test")["followers"])
    assert listed == [f"nf{j}" for j in reversed(range(stopped))] + [f"f{i}" for i in range(5)]
    again = fakesky.arrivals("crowd-5.fake.test", "followers", 1)  # the next in a minute
    assert again["arrived"] == stopped + 1
    assert short(followers(xrpc, "crowd-5.fake.test", limit=1)["followers"]) == [f"nf{stopped}"]


def test_blocked_newcomers_are_dropped_from_the_viewers_pages(fakesky, alice):
    fakesky.arrivals("crowd-20.fake.test", "followers", EVERY_100_MS)
    wait_for(fakesky, "crowd-20.fake.test", 2)
    newcomer = fakesky.did("nf0.crowd-20.fake.test")
    assert alice.apply(create(newcomer)).status_code == 200
    page = alice.get("app.bsky.graph.getFollowers", actor="crowd-20.fake.test", limit=100).json()
    assert "nf0" not in short(page["followers"])
    assert "nf1" in short(page["followers"])
    anyone = Xrpc(fakesky.url).get("app.bsky.graph.getFollowers", actor="crowd-20.fake.test")
    assert "nf0" in short(anyone.json()["followers"])
    blocks = alice.get("app.bsky.graph.getBlocks").json()["blocks"]
    assert [(b["did"], b["handle"]) for b in blocks] == [(newcomer, "nf0.crowd-20.fake.test")]
    viewer = alice.get("app.bsky.actor.getProfile", actor=newcomer).json()["viewer"]
    assert viewer["blocking"].startswith(f"at://{alice.did}/app.bsky.graph.block/")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"subject": "crowd-5.fake.test", "kind": "fans", "per_minute": 1}, "'fans'"),
        ({"subject": "crowd-5.fake.test", "kind": "likes", "per_minute": 1}, "at:// URI"),
        ({"subject": "nobody.example.org", "kind": "followers", "per_minute": 1}, "nobody"),
        ({"subject": "crowd-5.fake.test", "kind": "followers", "per_minute": -1}, "per_minute"),
        ({"subject": "crowd-5.fake.test", "kind": "followers", "per_minute": 60001}, "60000"),
        ({"subject": "crowd-5.fake.test", "kind": "followers", "per_minute": "9"}, "'9'"),
        (
            {
                "subject": "crowd-5.fake.test",
                "kind": "followers",
                "per_minute": 1,
                "backdate_every": -2,
            },
            "backdate_every",
        ),
    ],
)
def test_the_arrivals_hook_refuses_bad_values_naming_them(fakesky, body, named):
    response = fakesky.http.post("/_fake/arrivals", json=body)
    assert response.status_code == 400
    assert named in response.json()["message"]
    assert fakesky.state()["arrivals"] == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("crowd-10.fake.test:fans:10", "SUBJECT:KIND:PER_MINUTE[:BACKDATE_EVERY]"),
        ("crowd-10.fake.test:followers:x", "whole numbers"),
        ("crowd-10.fake.test:followers:70000", "per_minute"),
        (":followers:10", "SUBJECT"),
        ("nobody.example.org:followers:10", "nobody.example.org"),
        (f"at://crowd-10.fake.test/app.bsky.feed.post/{RKEY}:likes:10:2", "seeded post"),
    ],
)
def test_the_arrivals_flag_refuses_bad_values_naming_them(value, named):
    assert named in refusal("--arrivals", value)


def test_seeded_arrivals_survive_a_reset_and_a_restart_keeps_every_stream(tmp_path):
    port, state_file = free_port(), tmp_path / "state.pickle"
    post = f"at://crowd-70.fake.test/app.bsky.feed.post/{RKEY}"
    seeds = (
        *("--post", f"crowd-70.fake.test/{RKEY}:20:0:0:0"),
        *("--arrivals", f"crowd-70.fake.test:followers:{EVERY_10_MS}"),
        *("--arrivals", f"{post}:likes:{EVERY_10_MS}:2"),
    )
    process, http = start(port, state_file, *seeds)
    try:
        body = {"subject": "crowd-5.fake.test", "kind": "followers", "per_minute": EVERY_10_MS}
        http.post("/_fake/arrivals", json=body).raise_for_status()
        before = {s["subject"]: s["arrived"] for s in http.get("/_fake/state").json()["arrivals"]}
        assert len(before) == 3
    finally:
        output = stop(process)
    assert f"arrivals crowd-70.fake.test followers per_minute={EVERY_10_MS}" in output

    process, http = start(port, state_file, *seeds)
    try:
        streams = http.get("/_fake/state").json()["arrivals"]
        assert [s["subject"] for s in streams] == list(before)
        assert all(s["arrived"] > before[s["subject"]] for s in streams), "the clock went on"
        xrpc = Xrpc(f"http://127.0.0.1:{port}")
        first = xrpc.get("app.bsky.graph.getFollowers", actor="crowd-5.fake.test", limit=1)
        assert short(first.json()["followers"])[0].startswith("nf")
        http.post("/_fake/reset").raise_for_status()
        after = http.get("/_fake/state").json()["arrivals"]
        assert [s["kind"] for s in after] == ["followers", "likes"], "only seeds are kept"
        assert after[0]["arrived"] < streams[0]["arrived"], "restarted at the reset"
        assert short(
            xrpc.get("app.bsky.graph.getFollowers", actor="crowd-5.fake.test").json()["followers"]
        ) == [f"f{i}" for i in range(5)]
    finally:
        stop(process)


def test_a_state_file_from_before_arrivals_still_loads():
    fake = FakeBluesky()
    fake.add_target("crowd", 5)
    del fake.__dict__["arrivals"]  # as an older fake wrote it
    restored = pickle.loads(pickle.dumps(fake))  # noqa: S301 - our own bytes
    assert restored.state()["arrivals"] == []
    stream = restored.add_arrivals("crowd-5.fake.test", "followers", EVERY_100_MS)
    assert stream["arrived"] == 1
