"""Posts and their engagement as the reference AppView serves them: getPosts, getLikes,
getRepostedBy, getQuotes and getPostThread (bsky/src/api/app/bsky/feed/*.ts), over bare HTTP."""

import pytest
from conftest import free_port

from fakesky.tests.conftest import Xrpc, create
from fakesky.tests.test_service import refusal, start, stop

RKEY = "3lpileon2abcd"
PILE_ON = {"likes": 2000, "reposts": 500, "quotes": 200, "replies": 300}
# Reposters 0, 5, 10, ... and repliers 0, 10, 20, ... are likers too (posts.py).
PILE_ON_DISTINCT = 2000 + (500 - 100) + 200 + (300 - 30)
KEYS = {
    "app.bsky.feed.getLikes": "likes",
    "app.bsky.feed.getRepostedBy": "repostedBy",
    "app.bsky.feed.getQuotes": "posts",
}


@pytest.fixture
def pile_on(fakesky):
    return fakesky.post("crowd-10.fake.test", RKEY, **PILE_ON)["uri"]


def all_pages(xrpc, nsid, uri, key, limit=100, **params):
    """Every item of a paged list, following cursors to the end; the pages' cursors."""
    items, cursors, cursor = [], [], None
    while True:
        if cursor:
            params["cursor"] = cursor
        response = xrpc.get(nsid, uri=uri, limit=limit, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body[key]
        cursor = body.get("cursor")
        if not cursor:
            return items, cursors
        cursors.append(cursor)


def thread_posts(node):
    """Every post view in a thread's replies, depth first."""
    found = []
    for reply in node.get("replies", []):
        if "post" in reply:
            found.append(reply["post"])
            found += thread_posts(reply)
    return found


def count_replies(node):
    return sum(1 + count_replies(r) for r in node.get("replies", []))


def thread(xrpc, uri, **params):
    response = xrpc.get("app.bsky.feed.getPostThread", uri=uri, **params)
    assert response.status_code == 200, response.text
    return response.json()["thread"]


def test_get_posts_counts_as_the_reference_counts(fakesky, xrpc, pile_on):
    unknown = pile_on.replace(RKEY, "3lpileon2abce")
    body = xrpc.get("app.bsky.feed.getPosts", uris=[pile_on, unknown, pile_on]).json()
    [post] = body["posts"]  # unknown left out, duplicates once
    assert post["uri"] == pile_on
    assert post["author"]["handle"] == "crowd-10.fake.test"
    assert (post["likeCount"], post["repostCount"], post["quoteCount"]) == (2000, 500, 200)
    assert post["replyCount"] == 150, "replyCount counts direct replies only"
    assert post["record"]["$type"] == "app.bsky.feed.post"
    assert post["record"]["createdAt"] == post["indexedAt"] == "2025-05-19T03:00:23.622Z"
    assert "viewer" not in post, "no viewer state without a viewer"
    too_many = xrpc.get("app.bsky.feed.getPosts", uris=[pile_on] * 26)
    assert too_many.status_code == 400


def test_quotes_embed_the_post_and_replies_point_at_their_parents(alice, pile_on):
    quotes = alice.get("app.bsky.feed.getQuotes", uri=pile_on, limit=2).json()["posts"]
    record = quotes[0]["record"]
    assert record["embed"] == {
        "$type": "app.bsky.embed.record",
        "record": {"uri": pile_on, "cid": quotes[0]["embed"]["record"]["cid"]},
    }
    assert quotes[0]["embed"]["record"]["$type"] == "app.bsky.embed.record#viewRecord"
    assert quotes[0]["embed"]["record"]["likeCount"] == 2000
    assert quotes[0]["viewer"] == {
        "bookmarked": False,
        "threadMuted": False,
        "embeddingDisabled": False,
    }
    replies = thread_posts(thread(alice, pile_on, depth=2))
    direct, nested = replies[0], replies[1]  # reply 2 answers the post, reply 1 answers 2
    assert direct["record"]["reply"]["parent"]["uri"] == pile_on
    assert nested["record"]["reply"]["parent"]["uri"] == direct["uri"]
    assert nested["record"]["reply"]["root"]["uri"] == pile_on
    fetched = alice.get("app.bsky.feed.getPosts", uris=[quotes[1]["uri"], nested["uri"]]).json()
    assert [p["uri"] for p in fetched["posts"]] == [quotes[1]["uri"], nested["uri"]]


def test_some_accounts_engage_twice_and_the_distinct_count_is_exact(xrpc, pile_on):
    likes, _ = all_pages(xrpc, "app.bsky.feed.getLikes", pile_on, "likes")
    reposts, _ = all_pages(xrpc, "app.bsky.feed.getRepostedBy", pile_on, "repostedBy")
    quotes, _ = all_pages(xrpc, "app.bsky.feed.getQuotes", pile_on, "posts")
    replies = thread_posts(thread(xrpc, pile_on))
    groups = {
        "likes": {like["actor"]["did"] for like in likes},
        "reposts": {actor["did"] for actor in reposts},
        "quotes": {post["author"]["did"] for post in quotes},
        "replies": {post["author"]["did"] for post in replies},
    }
    assert {name: len(dids) for name, dids in groups.items()} == PILE_ON
    assert len(set().union(*groups.values())) == PILE_ON_DISTINCT == 2870
    assert len(groups["reposts"] & groups["likes"]) == 100
    assert len(groups["replies"] & groups["likes"]) == 30
    assert [a["handle"].split(".")[0] for a in reposts[:6]] == ["l0", "r1", "r2", "r3", "r4", "l5"]


def test_engagers_have_profiles_and_handles_that_resolve(fakesky, xrpc, pile_on):
    did = fakesky.did(f"q7.{RKEY}.crowd-10.fake.test")
    profile = xrpc.get("app.bsky.actor.getProfile", actor=did).json()
    assert profile["handle"] == f"q7.{RKEY}.crowd-10.fake.test"
    assert xrpc.get("app.bsky.actor.getProfile", actor=f"q200.{RKEY}.crowd-10.fake.test").json()[
        "message"
    ] == ("Profile not found")
    # Reposter 5 is liker 5: it has the liker's identity only.
    overlapping = xrpc.get("app.bsky.actor.getProfile", actor=f"r5.{RKEY}.crowd-10.fake.test")
    assert overlapping.status_code == 400


def test_likes_page_newest_first_by_keyset_cursor_without_repeats_or_gaps(xrpc, pile_on):
    likes, cursors = all_pages(xrpc, "app.bsky.feed.getLikes", pile_on, "likes", limit=70)
    handles = [like["actor"]["handle"].split(".")[0] for like in likes]
    assert handles == [f"l{i}" for i in range(2000)]
    assert len(cursors) == 28  # 29 pages; the last one has no cursor
    milliseconds, cid = cursors[0].split("__")
    assert cid.startswith("bafyrei")
    assert likes[69]["indexedAt"] == likes[0]["indexedAt"][:20] + "553Z"  # 69 ms older
    assert int(milliseconds) == int(cursors[1].split("__")[0]) + 70


def test_a_cursor_is_a_key_not_an_offset(fakesky, xrpc):
    """(sortAt, cid) < the cursor's: a 100,000-like post is read from anywhere at once."""
    uri = fakesky.post("crowd-10.fake.test", RKEY, likes=100_000)["uri"]
    first = xrpc.get("app.bsky.feed.getLikes", uri=uri, limit=1).json()
    newest_ms = int(first["cursor"].split("__")[0])
    deep = xrpc.get("app.bsky.feed.getLikes", uri=uri, cursor=f"{newest_ms - 99_998}__z")
    assert [like["actor"]["handle"].split(".")[0] for like in deep.json()["likes"]] == [
        "l99998",
        "l99999",
    ]
    assert "cursor" not in deep.json()
    assert float(deep.headers["Server-Timing"].split("dur=")[1]) < 50


def test_limits_and_cursors_are_refused_as_the_reference_refuses_them(xrpc, pile_on):
    for nsid, key in KEYS.items():
        over = xrpc.get(nsid, uri=pile_on, limit=101)
        assert (over.status_code, over.json()["message"]) == (
            400,
            "Error: limit can not be greater than 100",
        )
        under = xrpc.get(nsid, uri=pile_on, limit=0)
        assert under.json()["message"] == "Error: limit can not be less than 1"
        assert len(xrpc.get(nsid, uri=pile_on, limit=100).json()[key]) == 100
        bad = xrpc.get(nsid, uri=pile_on, cursor="12345")
        assert (bad.status_code, bad.json()["message"]) == (400, "Malformed cursor")
        old = xrpc.get(nsid, uri=pile_on, cursor="v1::abc").json()
        assert old[key] == []
        assert "cursor" not in old
    stale = xrpc.get("app.bsky.feed.getLikes", uri=pile_on, cursor="did:plc:abc")
    assert stale.json()["message"] == "Cursor appear to be out of date, please try reloading."
    nothing = xrpc.get("app.bsky.feed.getLikes", uri=pile_on.replace(RKEY, "3lpileon2abce"))
    assert nothing.json()["likes"] == []
    cid = xrpc.get("app.bsky.feed.getPosts", uris=[pile_on]).json()["posts"][0]["cid"]
    echoed = xrpc.get("app.bsky.feed.getRepostedBy", uri=pile_on, cid=cid, limit=1).json()
    assert (echoed["uri"], echoed["cid"]) == (pile_on, cid)


def test_blocked_engagers_are_dropped_and_pages_refilled(fakesky, alice, pile_on):
    likers = [
        like["actor"]["did"]
        for like in all_pages(alice, "app.bsky.feed.getLikes", pile_on, "likes")[0][:150]
    ]
    assert alice.apply(*(create(did) for did in likers)).status_code == 200
    page = alice.get("app.bsky.feed.getLikes", uri=pile_on, limit=100).json()
    assert page["likes"][0]["actor"]["handle"] == f"l150.{RKEY}.crowd-10.fake.test"
    assert len(page["likes"]) == 100
    assert page["cursor"]
    # Reposters 0, 5, ..., 145 are those likers: blocked too.
    reposts = alice.get("app.bsky.feed.getRepostedBy", uri=pile_on, limit=10).json()
    assert [a["handle"].split(".")[0] for a in reposts["repostedBy"][:5]] == [
        "r1",
        "r2",
        "r3",
        "r4",
        "r6",
    ]
    blocks = alice.get("app.bsky.graph.getBlocks", limit=100).json()["blocks"]
    assert {b["did"] for b in blocks} <= set(likers)
    assert all(b["viewer"]["blocking"] for b in blocks)
    fakesky.configure(fill_page_max_requests=1)
    short = alice.get("app.bsky.feed.getLikes", uri=pile_on, limit=100).json()
    assert short["likes"] == []
    assert short["cursor"]
    # Without a viewer nothing is dropped.
    assert len(Xrpc(fakesky.url).get("app.bsky.feed.getLikes", uri=pile_on).json()["likes"]) == 50


def test_a_block_between_the_author_and_an_engager_hides_it_from_everyone(fakesky, alice):
    """likeBlocks, postBlocks.embed and postBlocks.parent: the author's own blocks count."""
    uri = fakesky.post("alice.fake.test", RKEY, likes=5, quotes=5, replies=5)["uri"]
    liker = fakesky.did(f"l1.{RKEY}.alice.fake.test")
    quoter = fakesky.did(f"q1.{RKEY}.alice.fake.test")
    replier = fakesky.did(f"p2.{RKEY}.alice.fake.test")  # reply 2 answers the post
    alice.apply(create(liker), create(quoter), create(replier))
    anyone = Xrpc(fakesky.url)
    likes = anyone.get("app.bsky.feed.getLikes", uri=uri).json()["likes"]
    assert liker not in {like["actor"]["did"] for like in likes}
    assert len(likes) == 4
    quotes = anyone.get("app.bsky.feed.getQuotes", uri=uri).json()["posts"]
    assert [q["author"]["handle"].split(".")[0] for q in quotes] == ["q0", "q2", "q3", "q4"]
    replies = thread(anyone, uri, depth=1)["replies"]
    assert replier not in {r["post"]["author"]["did"] for r in replies}
    assert all("blocked" not in r for r in replies), "dropped, not shown as blocked"


def test_thread_depth_nests_replies_newest_first(xrpc, pile_on):
    assert "replies" not in thread(xrpc, pile_on, depth=0)
    shallow = thread(xrpc, pile_on, depth=1)
    assert count_replies(shallow) == len(shallow["replies"]) == 150
    assert all("replies" not in reply for reply in shallow["replies"])
    assert [r["post"]["record"]["text"] for r in shallow["replies"][:4]] == [
        "Reply 2",
        "Reply 3",
        "Reply 6",
        "Reply 7",
    ]
    assert count_replies(thread(xrpc, pile_on, depth=2)) == 225
    full = thread(xrpc, pile_on)  # depth 6 by default
    assert count_replies(full) == 300
    chain = full["replies"][0]
    assert chain["post"]["replyCount"] == 1
    assert chain["replies"][0]["replies"][0]["post"]["record"]["text"] == "Reply 0"
    assert chain["replies"][0]["replies"][0]["replies"] == []
    assert full["threadContext"] == {}


def test_a_reply_shows_its_parents_up_to_parent_height(xrpc, pile_on):
    deepest = thread(xrpc, pile_on)["replies"][0]["replies"][0]["replies"][0]["post"]["uri"]
    anchored = thread(xrpc, deepest)
    assert anchored["parent"]["post"]["record"]["text"] == "Reply 1"
    assert anchored["parent"]["parent"]["post"]["record"]["text"] == "Reply 2"
    assert anchored["parent"]["parent"]["parent"]["post"]["uri"] == pile_on
    assert "parent" not in anchored["parent"]["parent"]["parent"]
    one_up = thread(xrpc, deepest, parentHeight=1)
    assert "parent" not in one_up["parent"]
    assert "parent" not in thread(xrpc, deepest, parentHeight=0)


def test_blocked_accounts_in_a_thread_are_blocked_posts(fakesky, alice, pile_on):
    replier = fakesky.did(f"p2.{RKEY}.crowd-10.fake.test")
    alice.apply(create(replier))
    first = thread(alice, pile_on)["replies"][0]
    assert first["$type"] == "app.bsky.feed.defs#blockedPost"
    assert first["blocked"] is True
    assert first["author"]["did"] == replier
    assert first["author"]["viewer"]["blocking"].startswith(f"at://{alice.did}/")
    assert "replies" not in first
    assert thread(alice, pile_on)["replies"][1]["post"]["record"]["text"] == "Reply 3"
    alice.apply(create(fakesky.did("crowd-10.fake.test")))
    whole = thread(alice, pile_on)
    assert whole["$type"] == "app.bsky.feed.defs#blockedPost"
    assert whole["uri"] == pile_on
    assert alice.get("app.bsky.feed.getPosts", uris=[pile_on]).json()["posts"] == []


def test_an_unknown_post_is_the_references_not_found(fakesky, xrpc, pile_on):
    by_handle = f"at://crowd-10.fake.test/app.bsky.feed.post/{RKEY[:-1]}e"
    response = xrpc.get("app.bsky.feed.getPostThread", uri=by_handle)
    assert response.status_code == 400
    did = fakesky.did("crowd-10.fake.test")
    assert response.json() == {
        "error": "NotFound",
        "message": f"Post not found: at://{did}/app.bsky.feed.post/{RKEY[:-1]}e",
    }
    found = thread(xrpc, f"at://crowd-10.fake.test/app.bsky.feed.post/{RKEY}")
    assert found["post"]["uri"] == pile_on
    over = xrpc.get("app.bsky.feed.getPostThread", uri=pile_on, depth=1001)
    assert over.json()["message"] == "Error: depth can not be greater than 1000"


def test_the_posts_hook_refuses_bad_values_naming_them(fakesky):
    bad_rkey = fakesky.http.post(
        "/_fake/posts", json={"author": "crowd-10.fake.test", "rkey": "hello"}
    )
    assert bad_rkey.status_code == 400
    assert "'hello'" in bad_rkey.json()["message"]
    unknown = fakesky.http.post("/_fake/posts", json={"author": "nobody.example", "rkey": RKEY})
    assert "nobody.example" in unknown.json()["message"]
    negative = fakesky.http.post(
        "/_fake/posts", json={"author": "crowd-10.fake.test", "rkey": RKEY, "likes": -1}
    )
    assert "likes" in negative.json()["message"]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("crowd-10.fake.test/notatid:1:2:3:4", "'notatid'"),
        ("crowd-10.fake.test/3lpileon2abcd:1:2:3", "HANDLE/RKEY:LIKES:REPOSTS:QUOTES:REPLIES"),
        ("crowd-10.fake.test/3lpileon2abcd:1:x:3:4", "whole numbers"),
        ("nobody.example.org/3lpileon2abcd:1:2:3:4", "nobody.example.org"),
    ],
)
def test_the_post_flag_refuses_bad_values_naming_them(value, named):
    assert named in refusal("--post", value)


def test_seeded_posts_survive_a_reset_and_a_restart(tmp_path):
    port, state_file = free_port(), tmp_path / "state.pickle"
    seed = ("--post", f"crowd-70.fake.test/{RKEY}:20:5:4:3")
    process, http = start(port, state_file, *seed)
    try:
        http.post("/_fake/reset").raise_for_status()
        added = http.post(
            "/_fake/posts", json={"author": "kept.fake.test", "rkey": RKEY, "likes": 3}
        ).json()
        state = http.get("/_fake/state").json()
        seeded = state["posts"][0]["uri"]
        assert [p["likes"] for p in state["posts"]] == [20, 3]
    finally:
        output = stop(process)
    assert f"post {seeded} likes=20 reposts=5 quotes=4 replies=3" in output

    process, http = start(port, state_file, *seed)
    try:
        xrpc = Xrpc(f"http://127.0.0.1:{port}")
        posts = xrpc.get("app.bsky.feed.getPosts", uris=[seeded, added["uri"]])
        assert [p["likeCount"] for p in posts.json()["posts"]] == [20, 3]
        http.post("/_fake/reset").raise_for_status()
        after = xrpc.get("app.bsky.feed.getPosts", uris=[seeded, added["uri"]])
        assert [p["uri"] for p in after.json()["posts"]] == [seeded], "only seeds are kept"
        likes = xrpc.get("app.bsky.feed.getLikes", uri=seeded).json()["likes"]
        assert len(likes) == 20
    finally:
        stop(process)


def test_a_changed_post_seed_starts_afresh_instead_of_restoring_the_old_post(tmp_path):
    """A demo host upgraded to another --post must serve that post, not the saved one."""
    port, state_file = free_port(), tmp_path / "state.pickle"
    process, http = start(port, state_file, "--post", f"crowd-70.fake.test/{RKEY}:20:5:4:3")
    stop(process)
    process, http = start(port, state_file, "--post", f"crowd-70.fake.test/{RKEY}:9:0:0:0")
    try:
        assert [p["likes"] for p in http.get("/_fake/state").json()["posts"]] == [9]
    finally:
        output = stop(process)
    assert "not restored: the seeds changed" in output
