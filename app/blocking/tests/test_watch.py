"""Watching a campaign for its whole time: after the first pass, newest-first polls take in
the newcomers (each once, one token each), a rescan finds the ones whose order was
backdated, and watching ends with the campaign's time. Run here, task by task, against
the fake's arrivals over real HTTP."""

import time
from datetime import timedelta

import pytest
from conftest import wait_until
from django.utils import timezone

from blocking import batches, buckets, tasks
from blocking.campaigns import WATCHING
from blocking.models import Batch, Campaign, TokenBucket
from blocking.tests.helpers import tasks_here, unlimited

pytestmark = pytest.mark.django_db
TARGET = "crowd-300.fake.test"
BIG_TARGET = "crowd-2500.fake.test"


def waiting_dids():
    return [did for dids in Batch.objects.values_list("dids", flat=True) for did in dids]


@pytest.fixture
def watched(request, client, person, django_capture_on_commit_callbacks, settings):
    """A watched campaign against TARGET's followers (or the target the test gives), its
    first pass taken in (one page); returns a function that runs the campaign's next page
    (a poll, or a rescan's page) here."""
    settings.FOLLOWER_PAGE_SIZE = 5000
    user = person()
    TokenBucket.objects.filter(user=user).update(refill_per_hour=0)
    target = getattr(request, "param", TARGET)
    data = {"target": target, "scope": "followers", "action": "block", "duration": "1"}
    assert client.post("/campaigns/new/", {**data, "watch": "on"}).status_code == 302
    campaign = Campaign.objects.get()

    def next_page():
        campaign.refresh_from_db()
        with tasks_here(django_capture_on_commit_callbacks):
            if not campaign.found and not campaign.cursor:
                tasks.start_campaign.apply(args=(campaign.pk,))
            tasks.fetch_follower_page.apply(args=(campaign.pk, campaign.cursor))
        campaign.refresh_from_db()
        return campaign

    next_page()
    campaign.user = user
    return campaign, next_page


def arrived(fakesky):
    return sum(stream["arrived"] for stream in fakesky.state()["arrivals"])


def test_a_poll_takes_in_each_newcomer_once_and_pays_a_token_for_each(watched, fakesky):
    campaign, next_page = watched
    assert campaign.cursor == WATCHING
    assert campaign.watching_since is not None
    assert campaign.found == campaign.expected == 300
    before = buckets.balance(campaign.user).tokens
    fakesky.arrivals(TARGET, "followers", per_minute=1200)
    time.sleep(1.5)
    fakesky.arrivals(TARGET, "followers", per_minute=0)
    newcomers = arrived(fakesky)
    assert newcomers >= 10
    campaign = next_page()
    assert campaign.watched == newcomers
    assert (campaign.found, campaign.expected) == (300 + newcomers, 300 + newcomers)
    assert before - buckets.balance(campaign.user).tokens == newcomers
    assert len(waiting_dids()) == len(set(waiting_dids())) == 300 + newcomers
    # Nothing new: the next poll takes in nobody, and skips nobody twice.
    campaign = next_page()
    assert (campaign.watched, campaign.found, campaign.skipped) == (newcomers, 300 + newcomers, 0)
    assert campaign.status == Campaign.Status.RUNNING
    assert campaign.next_page_at > timezone.now()


@pytest.mark.parametrize("watched", [BIG_TARGET], indirect=True)
def test_once_the_first_pass_is_blocked_a_poll_stops_at_the_first_empty_page(
    fakesky, django_capture_on_commit_callbacks, watched
):
    campaign, next_page = watched
    handle = campaign.user.handle
    unlimited(fakesky)
    with tasks_here(django_capture_on_commit_callbacks):
        for pk in Batch.objects.values_list("pk", flat=True):
            Batch.objects.filter(pk=pk).update(state=Batch.State.QUEUED)
            batches.act_on_batch.apply(args=(pk,))
    assert len(fakesky.state(handle)["blocked"]) == 2500
    # The AppView shows a block a moment after it is made (a poll comes minutes later).
    wait_until(lambda: fakesky.state()["totals"]["indexing_pending"] == 0, 10, message="indexed")

    def pages_read(poll):
        calls = "app.bsky.graph.getFollowers"
        before = fakesky.state(handle)["calls_by_method"].get(calls, 0)
        poll()
        return fakesky.state(handle)["calls_by_method"][calls] - before

    # The AppView leaves the blocked accounts out, filling a page from at most 1,000 of the
    # list's entries (fillPage): every page of these 2,500 comes back empty, the first two
    # with a cursor, and the first empty one ends the poll.
    assert pages_read(next_page) == 1
    fakesky.arrivals(BIG_TARGET, "followers", per_minute=1200)
    time.sleep(0.5)
    fakesky.arrivals(BIG_TARGET, "followers", per_minute=0)
    # The newcomers on the first page (with a cursor: more follow), then an empty one.
    assert pages_read(next_page) == 2
    assert Campaign.objects.get(pk=campaign.pk).watched == arrived(fakesky)


def test_a_backdated_newcomer_is_missed_by_polls_and_found_by_the_rescan(watched, fakesky):
    campaign, next_page = watched
    fakesky.arrivals(TARGET, "followers", per_minute=1200, backdate_every=1)
    time.sleep(1)
    fakesky.arrivals(TARGET, "followers", per_minute=0)
    newcomers = arrived(fakesky)
    assert newcomers >= 5
    campaign = next_page()
    assert campaign.watched == 0  # they sort after the 300 known ones: the poll stops first
    Campaign.objects.filter(pk=campaign.pk).update(rescan_at=timezone.now())
    campaign = next_page()
    assert (campaign.cursor, campaign.rescanning) == ("", True)
    for _ in range(5):
        campaign = next_page()
        if campaign.cursor == WATCHING:
            break
    assert not campaign.rescanning
    assert campaign.watched == newcomers
    assert campaign.found == 300 + newcomers
    assert campaign.skipped == 0
    assert len(waiting_dids()) == len(set(waiting_dids())) == 300 + newcomers


def test_watching_waits_for_tokens_and_ends_with_the_campaigns_time(watched, fakesky):
    campaign, next_page = watched
    TokenBucket.objects.filter(user=campaign.user).update(tokens=0)
    fakesky.arrivals(TARGET, "followers", per_minute=1200)
    time.sleep(0.5)
    fakesky.arrivals(TARGET, "followers", per_minute=0)
    campaign = next_page()
    assert campaign.watched == 0
    assert "Watching waits for tokens" in campaign.error
    TokenBucket.objects.filter(user=campaign.user).update(tokens=1000)
    campaign = next_page()
    assert campaign.watched == arrived(fakesky)
    assert campaign.error == ""
    Campaign.objects.filter(pk=campaign.pk).update(
        watch_until=timezone.now() - timedelta(seconds=1)
    )
    campaign = next_page()
    assert campaign.pages_done
    assert campaign.next_page_at is None
