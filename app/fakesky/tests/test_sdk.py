"""The official AT Protocol SDK for Python (PyPI atproto), unchanged, against the fake over
real HTTP: where the SDK and the fake disagree, the fake is wrong."""

import re
import time

from atproto import Client, SessionEvent, models
from atproto_core.uri import AtUri
from conftest import wait_until

PASSWORD = "sdk-app-pass"
# The SDK refreshes a session 15 minutes before its access token expires: a token that
# lives 15 minutes and a few seconds makes it refresh a few seconds after signing in.
SDK_REFRESH_MARGIN_S = 15 * 60
LIVES_AFTER_MARGIN_S = 6


def test_the_official_sdk_does_a_whole_blocking_session(fakesky):
    fakesky.configure(
        indexing_delay_s=1, access_token_ttl_s=SDK_REFRESH_MARGIN_S + LIVES_AFTER_MARGIN_S
    )
    fakesky.account("sdk.fake.test", PASSWORD)
    client = Client(base_url=fakesky.url)
    events = []
    client.on_session_change(lambda event, session: events.append(event))

    signed_in_at = time.time()
    me = client.login("sdk.fake.test", PASSWORD)
    assert me.handle == "sdk.fake.test"
    assert re.fullmatch(r"did:plc:[a-z2-7]{24}", me.did)
    # The SDK talks to the PDS the didDoc names from here on.
    assert client.export_session_string().endswith(fakesky.url)

    target = client.get_profile("crowd-250.fake.test")
    assert target.followers_count == 250
    first = client.get_followers(target.did, limit=100)
    second = client.get_followers(target.did, cursor=first.cursor, limit=100)
    dids = [f.did for f in first.followers + second.followers]
    assert len(dids) == len(set(dids)) == 200
    assert second.cursor

    now = client.get_current_time_iso()
    created = client.app.bsky.graph.block.create(
        me.did, models.AppBskyGraphBlock.Record(subject=dids[0], created_at=now)
    )
    writes = client.com.atproto.repo.apply_writes(
        models.ComAtprotoRepoApplyWrites.Data(
            repo=me.did,
            writes=[
                models.ComAtprotoRepoApplyWrites.Create(
                    collection="app.bsky.graph.block",
                    value=models.AppBskyGraphBlock.Record(subject=did, created_at=now),
                )
                for did in dids[1:4]
            ],
        )
    )
    assert len(writes.results) == 3
    assert all(result.uri.startswith(f"at://{me.did}/") for result in writes.results)

    def listed():
        blocks = client.app.bsky.graph.get_blocks().blocks
        return sorted(b.did for b in blocks) if len(blocks) == 4 else None

    assert wait_until(listed, 10, message="getBlocks to list four blocks") == sorted(dids[:4])
    assert client.get_profile(dids[0]).viewer.blocking == created.uri

    assert client.mute(dids[5])
    assert client.app.bsky.graph.block.delete(me.did, AtUri.from_str(created.uri).rkey)

    time.sleep(max(0.0, signed_in_at + LIVES_AFTER_MARGIN_S + 1 - time.time()))
    assert client.get_profile(dids[1]).viewer.blocking == writes.results[0].uri
    assert SessionEvent.REFRESH in events

    state = fakesky.state("sdk.fake.test")
    assert state["block_count"] == 3
    assert state["blocked"] == sorted(dids[1:4])
    assert state["muted"] == [dids[5]]
    assert state["logins"] == 1
    assert state["refreshes"] >= 1


def test_the_official_sdk_reads_a_pile_on(fakesky):
    """getPosts, getLikes to the end by cursor, getRepostedBy, getQuotes and getPostThread of
    a seeded post, every answer parsed into the SDK's models."""
    fakesky.configure(indexing_delay_s=0)
    fakesky.account("sdk.fake.test", PASSWORD)
    uri = fakesky.post(
        "crowd-20.fake.test", "3lpileon2abcd", likes=230, reposts=40, quotes=12, replies=9
    )["uri"]
    client = Client(base_url=fakesky.url)
    client.login("sdk.fake.test", PASSWORD)

    [post] = client.get_posts([uri]).posts
    assert isinstance(post, models.AppBskyFeedDefs.PostView)
    assert isinstance(post.record, models.AppBskyFeedPost.Record)
    assert (post.like_count, post.repost_count, post.quote_count, post.reply_count) == (
        230,
        40,
        12,
        5,  # direct replies only: 2, 3, 6, 7 and 8
    )

    likers, cursor, pages = [], None, 0
    while True:
        page = client.get_likes(uri, cursor=cursor, limit=100)
        likers += [like.actor.did for like in page.likes]
        pages += 1
        cursor = page.cursor
        if not cursor:
            break
    assert (pages, len(likers), len(set(likers))) == (3, 230, 230)

    reposters = client.get_reposted_by(uri, limit=100).reposted_by
    assert len(reposters) == 40
    assert isinstance(reposters[0], models.AppBskyActorDefs.ProfileView)
    quotes = client.app.bsky.feed.get_quotes({"uri": uri, "limit": 100}).posts
    assert len(quotes) == 12
    assert isinstance(quotes[0].record.embed, models.AppBskyEmbedRecord.Main)
    assert isinstance(quotes[0].embed, models.AppBskyEmbedRecord.View)
    assert isinstance(quotes[0].embed.record, models.AppBskyEmbedRecord.ViewRecord)

    client.app.bsky.graph.block.create(
        client.me.did,
        models.AppBskyGraphBlock.Record(
            subject=fakesky.did("p3.3lpileon2abcd.crowd-20.fake.test"),
            created_at=client.get_current_time_iso(),
        ),
    )
    thread = client.get_post_thread(uri, depth=6).thread
    assert isinstance(thread, models.AppBskyFeedDefs.ThreadViewPost)
    first, blocked = thread.replies[:2]
    assert isinstance(first, models.AppBskyFeedDefs.ThreadViewPost)
    assert isinstance(first.post.record.reply, models.AppBskyFeedPost.ReplyRef)
    assert isinstance(first.replies[0], models.AppBskyFeedDefs.ThreadViewPost)
    assert isinstance(blocked, models.AppBskyFeedDefs.BlockedPost)
    assert blocked.author.viewer.blocking
    assert len({*likers, *(a.did for a in reposters)}) == 230 + 40 - 8  # 8 reposters liked too

    # New likes keep arriving, every other one backdated to the end of the list.
    fakesky.arrivals(uri, "likes", 6000, backdate_every=2)
    wait_until(
        lambda: client.get_posts([uri]).posts[0].like_count >= 236,
        10,
        interval=0.02,
        message="six new likes",
    )
    newest = client.get_likes(uri, limit=3)
    labels = [like.actor.handle.split(".")[0] for like in newest.likes]
    assert all(label.startswith("nl") and int(label[2:]) % 2 == 0 for label in labels), labels
    assert newest.likes[0].created_at == newest.likes[0].indexed_at
