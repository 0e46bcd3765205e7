"""Who a campaign touches and how: the never-block list (people a campaign never blocks,
whichever list they turn up on, checked when a page is taken in and again just before a
batch is sent; every skip counted with its reason), and block-and-mute in one campaign."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from blocking import batches, tasks, upkeep
from blocking.models import ActionRecord, Batch, Campaign, Trusted
from blocking.network import client_for
from blocking.tests.helpers import tasks_here

pytestmark = pytest.mark.django_db
TARGET = "crowd-120.fake.test"


def handle(index):
    return f"f{index}.{TARGET}"


def test_a_handle_is_checked_on_bluesky_when_added_and_can_be_removed(client, person):
    user = person()
    page = client.post("/never-block/", {"handle": "@F3.Crowd-120.fake.test"}, follow=True)
    assert f"@{handle(3)} is on your never-block list." in page.content.decode()
    row = Trusted.objects.get(owner=user)
    with client_for(user.account) as network:
        assert row.did == network.resolve(handle(3)).did
    again = client.post("/never-block/", {"handle": handle(3)}, follow=True).content.decode()
    assert f"@{handle(3)} was already on your never-block list." in again
    assert Trusted.objects.filter(owner=user).count() == 1

    unknown = client.post("/never-block/", {"handle": "nobody.example.org"}).content.decode()
    assert "There is no Bluesky account called @nobody.example.org." in unknown
    own = client.post("/never-block/", {"handle": user.handle}).content.decode()
    assert "That is you: your own account is never blocked." in own
    assert Trusted.objects.filter(owner=user).count() == 1

    # Another person can neither see nor remove it.
    other = get_user_model().objects.create_user("mallory", password="pw-mallory")
    client.force_login(other)
    assert handle(3) not in client.get("/never-block/").content.decode()
    assert client.post(f"/never-block/{row.pk}/remove/").status_code == 404
    client.force_login(user)
    removed = client.post(f"/never-block/{row.pk}/remove/", follow=True).content.decode()
    assert f"@{handle(3)} is off your never-block list." in removed
    assert not Trusted.objects.exists()


def test_a_target_on_the_list_is_refused(client, person):
    person()
    client.post("/never-block/", {"handle": TARGET})
    data = {"target": TARGET, "scope": "both", "action": "block", "duration": "1"}
    page = client.post("/campaigns/new/", data).content.decode()
    assert f"@{TARGET} is on your never-block list." in page
    assert not Campaign.objects.exists()


def test_people_on_the_list_are_never_blocked_and_each_skip_has_its_reason(
    client, person, fakesky, settings, django_capture_on_commit_callbacks
):
    """f3 is on the list before the page is read, f7 is put on it after the page became
    batches and before they are sent; the person follows f5."""
    with client_for(person("seed").account) as network:
        dids = {i: network.resolve(handle(i)).did for i in (3, 5, 7)}
    user = person("alice", follows=[dids[5]])
    client.post("/never-block/", {"handle": handle(3)})
    data = {"target": TARGET, "scope": "followers", "action": "block", "duration": "1"}
    assert client.post("/campaigns/new/", data).status_code == 302
    campaign = Campaign.objects.get()
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        tasks.fetch_follower_page.apply(args=(campaign.pk, ""))
        campaign.refresh_from_db()
        assert campaign.pages_done
        waiting = [did for dids_ in Batch.objects.values_list("dids", flat=True) for did in dids_]
        assert [dids[i] in waiting for i in (3, 5, 7)] == [False, False, True]
        client.post("/never-block/", {"handle": handle(7)})
        for pk in Batch.objects.values_list("pk", flat=True):
            Batch.objects.filter(pk=pk).update(state=Batch.State.QUEUED)
            batches.act_on_batch.apply(args=(pk,))
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DONE
    assert (campaign.found, campaign.acted, campaign.skipped) == (120, 117, 3)
    assert campaign.skipped_by == {"trusted": 2, "following": 1}
    blocked = set(fakesky.state(user.handle)["blocked"])
    assert len(blocked) == 117
    assert not blocked & set(dids.values())
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "3 (1 you follow them, 2 on your never-block list)" in page


def test_block_and_mute_does_both_in_one_campaign_and_lifts_both_at_the_end(
    client, person, fakesky, django_capture_on_commit_callbacks
):
    user = person()
    data = {"target": "crowd-60.fake.test", "scope": "both", "action": "both", "duration": "1"}
    assert client.post("/campaigns/new/", data).status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.action, campaign.also_mute, campaign.tokens_debited) == ("block", True, 61)
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        tasks.fetch_follower_page.apply(args=(campaign.pk, ""))
        # Every block first, then the mutes: the campaign is done when its blocks are, and
        # its mutes still go.
        for op in ("block", "mute"):
            for pk in Batch.objects.filter(op=op).order_by("pk").values_list("pk", flat=True):
                Batch.objects.filter(pk=pk).update(state=Batch.State.QUEUED)
                batches.act_on_batch.apply(args=(pk,))
                campaign.refresh_from_db()
                if op == "mute":
                    assert campaign.status == Campaign.Status.DONE
    assert (campaign.acted, campaign.muted, campaign.found, campaign.skipped) == (61, 61, 61, 0)
    assert campaign.tokens_refunded == 0  # a mute rides with its block: no token of its own
    state = fakesky.state(user.handle)
    assert (state["distinct_blocked"], state["muted_count"]) == (61, 61)
    page = client.get(f"/campaigns/{campaign.pk}/").content.decode()
    assert "Block and mute @crowd-60.fake.test" in page
    assert '<dd id="muted">61</dd>' in page

    # Time up: both are lifted.
    ActionRecord.objects.update(until=timezone.now() - timedelta(minutes=1))
    with tasks_here(django_capture_on_commit_callbacks):
        upkeep.release_expired.apply()
        for pk in Batch.objects.order_by("pk").values_list("pk", flat=True):
            Batch.objects.filter(pk=pk).update(state=Batch.State.QUEUED)
            batches.undo_batch.apply(args=(pk,))
    assert not ActionRecord.objects.exists()
    state = fakesky.state(user.handle)
    assert (state["block_count"], state["muted_count"]) == (0, 0)


def run_campaign(client, target, django_capture_on_commit_callbacks):
    """A campaign against target and its followers, started on the page, run here."""
    data = {"target": target, "scope": "both", "action": "block", "duration": "4"}
    assert client.post("/campaigns/new/", data).status_code == 302
    campaign = Campaign.objects.latest("pk")
    with tasks_here(django_capture_on_commit_callbacks):
        tasks.start_campaign.apply(args=(campaign.pk,))
        tasks.fetch_follower_page.apply(args=(campaign.pk, ""))
        run_batches("act_on_batch")
    campaign.refresh_from_db()
    return campaign


def run_batches(task):
    for pk in Batch.objects.order_by("pk").values_list("pk", flat=True):
        Batch.objects.filter(pk=pk).update(state=Batch.State.QUEUED)
        getattr(batches, task).apply(args=(pk,))


def test_a_finished_campaign_offers_to_lift_its_blocks_now_and_only_its_own(
    client, person, fakesky, settings, django_capture_on_commit_callbacks
):
    user = person()
    settings.RELEASE_BATCH_LIMIT = 25  # several passes
    kept = run_campaign(client, "crowd-20.fake.test", django_capture_on_commit_callbacks)
    done = run_campaign(client, "crowd-60.fake.test", django_capture_on_commit_callbacks)
    assert (kept.status, done.status) == ("done", "done")
    assert fakesky.state(user.handle)["distinct_blocked"] == 82
    page = client.get(f"/campaigns/{done.pk}/").content.decode()
    assert "Cancel the campaign" not in page
    assert "Lift these blocks now" in page
    assert "61 held until" in page

    # A sign-in gone stale asks for the password first, saying what will be lifted.
    session = client.session
    session["shoestring_signed_in_at"] -= 3600
    session.save()
    asked = client.post(f"/campaigns/{done.pk}/lift/").content.decode()
    assert "This lifts the 61 blocks and mutes the campaign against @crowd-60.fake.test" in asked
    done.refresh_from_db()
    assert done.lift_requested_at is None
    response = client.post(f"/campaigns/{done.pk}/lift/", {"confirm_password": "pw-alice"})
    assert response.status_code == 302
    done.refresh_from_db()
    assert done.lift_requested_at is not None
    assert (
        "Lifting its 61 remaining blocks" in client.get(f"/campaigns/{done.pk}/").content.decode()
    )

    with tasks_here(django_capture_on_commit_callbacks):
        for _ in range(5):
            upkeep.release_expired.apply()
            run_batches("undo_batch")
    done.refresh_from_db()
    assert done.lift_requested_at is None
    assert ActionRecord.objects.filter(campaign=done).count() == 0
    assert ActionRecord.objects.filter(campaign=kept).count() == 21
    assert fakesky.state(user.handle)["distinct_blocked"] == 21
    assert "Lift these blocks now" not in client.get(f"/campaigns/{done.pk}/").content.decode()
