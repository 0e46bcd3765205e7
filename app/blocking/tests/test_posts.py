"""A campaign that starts from a post: the link taken in, the preview, and every account
that liked, reposted, quoted or replied blocked exactly once, through the web page, a real
worker and the fake network over HTTP."""

import pytest
from conftest import WORKER_SETTINGS
from django import forms

from blocking import batches, buckets, tasks
from blocking.forms import parse_post
from blocking.models import ActionRecord, Batch, Campaign, TokenBucket
from blocking.network import client_for
from blocking.tests.helpers import finished, tasks_here, unlimited

RKEY = "3lpileon2abcd"
GROUPS = ["likes", "reposts", "quotes", "replies"]
# The pile_on post's engagers as the fake makes them (docs/fakesky.md, posts): 120 likers;
# of the 40 reposters, the 8 with an index that is a multiple of 5 liked it too; of the 30
# repliers, 3 (0, 10, 20) did: 120 + 32 + 15 + 27 accounts.
DISTINCT = 194


def post_form(post, groups=GROUPS, with_author=False, preview=False, action="block"):
    data = {"source": "post", "post": post, "post_groups": groups, "action": action}
    data["duration"] = "1"
    if with_author:
        data["with_author"] = "on"
    if preview:
        data["preview"] = "1"
    return data


@pytest.fixture
def pile_on(fakesky):
    """A post by a 300-follower account with a pile-on under it; returns its bsky.app link."""

    def make(likes=120, reposts=40, quotes=15, replies=30, author="crowd-300.fake.test"):
        made = fakesky.post(author, RKEY, likes, reposts, quotes, replies)
        return f"https://bsky.app/profile/{author}/post/{RKEY}", made["uri"]

    return make


@pytest.mark.parametrize(
    ("text", "actor"),
    [
        ("https://bsky.app/profile/loud.bsky.social/post/3lpileon2abcd", "loud.bsky.social"),
        ("  bsky.app/profile/x  ", None),
        ("https://bsky.app/profile/Loud.Bsky.Social/post/3lpileon2abcd/", "loud.bsky.social"),
        ("https://bsky.app/profile/did:plc:abc/post/3lpileon2abcd?ref=x", "did:plc:abc"),
        ("at://did:plc:abc/app.bsky.feed.post/3lpileon2abcd", "did:plc:abc"),
        ("at://did:plc:abc/app.bsky.graph.follow/3lpileon2abcd", None),
        ("https://evil.example/profile/a.b/post/3lpileon2abcd", None),
        ("https://bsky.app/profile/a.b/lists/3lpileon2abcd", None),
    ],
)
def test_a_post_link_or_address_is_read_and_anything_else_refused(text, actor):
    if actor is None:
        with pytest.raises(forms.ValidationError, match="not a link to a Bluesky post"):
            parse_post(text)
    else:
        assert parse_post(text) == (actor, RKEY)


@pytest.mark.django_db
def test_the_preview_counts_each_list_and_spends_nothing(client, person, pile_on):
    user = person()
    link, _ = pile_on()
    before = buckets.balance(user).tokens
    response = client.post("/campaigns/new/", post_form(link, with_author=True, preview=True))
    page = response.content.decode()
    assert response.status_code == 200
    assert (
        "About <strong>206</strong> accounts from a post by @crowd-300.fake.test: 120 likes,"
        " 40 reposts, 15 quotes, 30 replies, the author @crowd-300.fake.test." in page
    )
    assert "Someone who both liked and replied counts in both lists" in page
    assert not Campaign.objects.exists()
    assert buckets.balance(user).tokens == before
    # Fewer groups, fewer accounts: the preview follows the boxes ticked.
    response = client.post("/campaigns/new/", post_form(link, ["quotes"], preview=True))
    assert "About <strong>15</strong> accounts" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("post", "groups", "message"),
    [
        ("https://bsky.app/profile/crowd-300.fake.test/post/3lnothere2222", GROUPS, "no such post"),
        ("https://bsky.app/profile/nobody.fake.test/post/3lpileon2abcd", GROUPS, "no such post"),
        ("https://bsky.app/profile/crowd-300.fake.test", GROUPS, "not a link to a Bluesky post"),
        ("", GROUPS, "Paste the link of the post."),
        (None, [], "Choose who to take"),
    ],
)
def test_a_bad_post_is_refused_with_what_to_do(client, person, pile_on, post, groups, message):
    user = person()
    link, _ = pile_on()
    before = buckets.balance(user).tokens
    response = client.post("/campaigns/new/", post_form(link if post is None else post, groups))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Campaign.objects.exists()
    assert buckets.balance(user).tokens == before


@pytest.mark.django_db
def test_a_post_over_the_cap_and_ones_own_post_are_refused(
    client, person, pile_on, fakesky, settings
):
    person()
    settings.FOLLOWER_CAP = 200
    link, _ = pile_on()
    page = client.post("/campaigns/new/", post_form(link)).content.decode()
    assert "This post has about 205 likes, reposts, quotes and replies; the limit is 200." in page
    fakesky.post("alice.fake.test", "3lmyown222222", 3, 0, 0, 0)
    own = "https://bsky.app/profile/alice.fake.test/post/3lmyown222222"
    assert (
        "That is your own post." in client.post("/campaigns/new/", post_form(own)).content.decode()
    )
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_pages_of_a_post_take_in_each_account_once(
    client, person, pile_on, settings, django_capture_on_commit_callbacks
):
    """100 accounts a page: the likers who reposted or replied come up again on later pages,
    some while their batch waits (likers 50-99), some after it was blocked (0-49); either
    way they are taken in once and not counted twice. 100 reposters: 20 of them liked."""
    settings.FOLLOWER_PAGE_SIZE = 100
    settings.BLOCK_BATCH_SIZE = 50
    user = person()
    _, uri = pile_on(reposts=100)
    distinct = 120 + 80 + 15 + 27
    assert client.post("/campaigns/new/", post_form(uri)).status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.post_uri, campaign.post_groups, campaign.expected) == (uri, GROUPS, 265)
    positions = []
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        while not campaign.pages_done:
            tasks.fetch_follower_page.apply(args=(campaign.pk, campaign.cursor))
            campaign.refresh_from_db()
            positions.append(campaign.cursor.partition(":")[0])
            if len(positions) == 1:
                # One of the first page's batches is blocked before the next page comes.
                first = Batch.objects.filter(campaign=campaign).order_by("pk").first()
                Batch.objects.filter(pk=first.pk).update(state=Batch.State.QUEUED)
                batches.act_on_batch.apply(args=(first.pk,))
            assert len(positions) < 10, positions
    # Likes 0-99; likes 100-119 and every repost; quotes and replies.
    assert positions == ["likes", "quotes", ""]
    waiting = [did for dids in Batch.objects.values_list("dids", flat=True) for did in dids]
    made = list(ActionRecord.objects.filter(owner=user).values_list("subject_did", flat=True))
    assert len(made) == 50
    assert len(waiting) + len(made) == len(set(waiting) | set(made)) == distinct
    assert campaign.found == distinct
    assert campaign.found_by == {"likes": 120, "reposts": 100, "quotes": 15, "replies": 30}
    assert user.account.did not in waiting


@pytest.mark.django_db
def test_a_mute_campaign_does_not_count_its_own_mutes_as_already_muted(
    client, person, fakesky, pile_on, settings, django_capture_on_commit_callbacks
):
    """A mute is no block: the AppView still lists the muted, marked muted. Likers 0-49 are
    muted by the first batch; those of them who reposted (0, 5, ... 45) come up again on
    the reposts page, and are repeats of this campaign, not accounts muted before it."""
    settings.FOLLOWER_PAGE_SIZE = 100
    settings.BLOCK_BATCH_SIZE = 50
    fakesky.configure(indexing_delay_s=0)
    user = person()
    _, uri = pile_on(reposts=100)
    distinct = 120 + 80 + 15 + 27
    assert client.post("/campaigns/new/", post_form(uri, action="mute")).status_code == 302
    campaign = Campaign.objects.get()
    pages = 0
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        while not campaign.pages_done:
            tasks.fetch_follower_page.apply(args=(campaign.pk, campaign.cursor))
            campaign.refresh_from_db()
            pages += 1
            if pages == 1:
                first = Batch.objects.filter(campaign=campaign).order_by("pk").first()
                Batch.objects.filter(pk=first.pk).update(state=Batch.State.QUEUED)
                batches.act_on_batch.apply(args=(first.pk,))
                assert len(fakesky.state(user.handle)["muted"]) == 50
            assert pages < 10
    assert (campaign.found, campaign.skipped) == (distinct, 0)
    assert campaign.skipped_by == {}


@pytest.mark.django_db
def test_someone_skipped_on_two_of_a_posts_lists_is_found_and_skipped_once(
    client, person, fakesky, pile_on, settings, django_capture_on_commit_callbacks
):
    """Liker 10 (who reposted and replied too) is followed, liker 5 (who reposted too) is
    on the never-block list; the lists come a page of 100 at a time, so each is met again
    on a later page."""
    settings.FOLLOWER_PAGE_SIZE = 100

    def liker(i):
        return f"l{i}.{RKEY}.crowd-300.fake.test"

    pile_on(reposts=100)
    user = person(follows=[fakesky.did(liker(10))])
    assert client.post("/never-block/", {"handle": liker(5)}).status_code == 302
    post = f"https://bsky.app/profile/crowd-300.fake.test/post/{RKEY}"
    assert client.post("/campaigns/new/", post_form(post)).status_code == 302
    campaign = Campaign.objects.get()
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        while not campaign.pages_done:
            tasks.fetch_follower_page.apply(args=(campaign.pk, campaign.cursor))
            campaign.refresh_from_db()
    waiting = [did for dids in Batch.objects.values_list("dids", flat=True) for did in dids]
    distinct = 120 + 80 + 15 + 27
    assert (campaign.found, campaign.skipped, len(waiting)) == (distinct, 2, distinct - 2)
    assert campaign.skipped_by == {"following": 1, "trusted": 1}
    assert sorted(campaign.skipped_dids) == sorted(fakesky.did(liker(i)) for i in (5, 10))
    assert user.account.did not in waiting


@pytest.fixture
def worker_lease(settings):
    settings.ACTION_LEASE_S = int(WORKER_SETTINGS["SHOESTRING_ACTION_LEASE_S"])


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_everyone_on_a_post_is_blocked_once_and_the_tokens_of_repeats_come_back(
    client, person, fakesky, pile_on, celery_worker, worker_lease
):
    user = person()
    unlimited(fakesky)
    TokenBucket.objects.filter(user=user).update(refill_per_hour=0)
    before = buckets.balance(user).tokens
    _, uri = pile_on()
    response = client.post("/campaigns/new/", post_form(uri, with_author=True))
    assert response.status_code == 302, response.content.decode()[:2000]
    campaign = finished(Campaign.objects.get(), timeout=180)
    assert campaign.status == Campaign.Status.DONE, campaign.error
    state = fakesky.state(user.handle)
    assert state["duplicates"] == 0
    assert state["block_count"] == state["distinct_blocked"] == DISTINCT + 1  # and the author
    assert campaign.acted == campaign.found == DISTINCT + 1
    assert campaign.found_by == {"likes": 120, "reposts": 40, "quotes": 15, "replies": 30}
    assert campaign.tokens_debited == 206
    # Each account is paid for once: what the overlap would have cost comes back.
    assert campaign.tokens_refunded == 206 - campaign.acted > 0
    assert before - buckets.balance(user).tokens == campaign.acted
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Block who engaged with a post by @crowd-300.fake.test" in page
    assert "120 likes, 40 reposts, 15 quotes, 30 replies" in page


@pytest.mark.django_db
def test_a_post_whose_author_the_person_blocks_says_why_it_cannot_be_read(
    client, person, pile_on, fakesky
):
    """The AppView hides the posts of an account the viewer blocks (getPosts: noBlocks),
    and the common case is exactly that: the person blocked the troll first."""
    user = person()
    fakesky.configure(indexing_delay_s=0)
    link, _ = pile_on()
    with client_for(user.account) as network:
        network.block_many([network.resolve("crowd-300.fake.test").did])
    page = client.post("/campaigns/new/", post_form(link, preview=True)).content.decode()
    assert "Bluesky hides the posts of @crowd-300.fake.test from you because you block them" in (
        page
    )
    assert not Campaign.objects.exists()
