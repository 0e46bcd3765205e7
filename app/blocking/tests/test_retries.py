"""Retries by kind: waits never count against the network-error limit and never fail work
for good; terminal errors are not retried and say why; lost messages are recovered from
data. The tasks run in this process (no broker needed): what is checked is the data they
leave behind, which is what beat works from."""

import time
from datetime import timedelta

import kombu.exceptions
import pytest
from bluesky.errors import AccountSuspended, RateLimited, ServerError
from bluesky.tids import next_tids
from django.db import OperationalError, connections
from django.utils import timezone

from blocking import batches, buckets, pacing, upkeep
from blocking.models import ActionRecord, Batch, Campaign, KillSwitch, LinkedAccount

pytestmark = pytest.mark.django_db


def campaign_with_batch(user, dids=("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",), **fields):
    buckets.debit(user, 100)
    campaign = Campaign.objects.create(
        user=user,
        target_handle="t.fake.test",
        target_did="did:plc:tttttttttttttttttttttttt",
        action="block",
        scope="followers",
        expected=100,
        tokens_debited=100,
        found=len(dids),
        pages_done=True,
        **fields,
    )
    batch = Batch.objects.create(
        owner=user,
        campaign=campaign,
        op="block",
        dids=list(dids),
        handles=[""] * len(dids),
        rkeys=["3kaaaaaaaaa2" + str(i % 8 + 2) for i in range(len(dids))],
        state="queued",
        queued_at=timezone.now(),
        not_before=timezone.now(),
    )
    return campaign, batch


@pytest.mark.parametrize(("scope", "marked"), [("address", False), ("account", True)])
def test_a_rate_limit_is_a_wait_that_only_the_accounts_own_limit_marks(person, scope, marked):
    user = person()
    account = LinkedAccount.objects.get(user=user)
    _, batch = campaign_with_batch(user)
    reset_at = int(time.time()) + 120
    batches._waited(batch, account, RateLimited("429", reset_at, scope))
    batch.refresh_from_db()
    account.refresh_from_db()
    assert batch.state == "ready"
    assert batch.failures == 0  # a wait uses up nothing
    assert 100 < (batch.not_before - timezone.now()).total_seconds() <= 125
    assert account.is_rate_limited() is marked


def test_an_account_window_smaller_than_the_batch_cuts_it_to_fit(person):
    """A 429 whose window holds 150 points can never take a batch of 60 blocks (180): the
    batch is cut to what the window holds, the rest waits as a row of its own."""
    user = person()
    account = LinkedAccount.objects.get(user=user)
    dids = [f"did:plc:{i:024d}" for i in range(60)]
    _, batch = campaign_with_batch(user, dids=dids)
    batches._waited(batch, account, RateLimited("429", int(time.time()) + 60, "account", 150))
    cut = Batch.objects.get(pk=batch.pk)
    rest = Batch.objects.exclude(pk=batch.pk).get()
    assert (cut.state, len(cut.dids), rest.state, len(rest.dids)) == ("ready", 50, "ready", 10)
    assert cut.dids + rest.dids == dids


def test_network_errors_are_counted_on_the_batch_and_end_it_after_the_limit(person, settings):
    user = person()
    account = LinkedAccount.objects.get(user=user)
    campaign, batch = campaign_with_batch(user)
    for failures in range(1, settings.MAX_NETWORK_FAILURES):
        batches._waited(batch, account, ServerError("503", 503))
        batch.refresh_from_db()
        assert (batch.state, batch.failures) == ("ready", failures)
        Batch.objects.filter(pk=batch.pk).update(state="queued")
        batch.refresh_from_db()
    batches._waited(batch, account, ServerError("503", 503))
    assert not Batch.objects.filter(pk=batch.pk).exists()
    campaign.refresh_from_db()
    assert campaign.status == "done"
    assert campaign.failed == 1
    assert "Bluesky kept failing" in campaign.error


def test_a_suspended_account_stops_its_campaigns_says_why_and_refunds(person):
    user = person()
    account = LinkedAccount.objects.get(user=user)
    campaign, batch = campaign_with_batch(user)
    Campaign.objects.filter(pk=campaign.pk).update(acted=40, pages_done=False)
    before = buckets.balance(user).tokens
    batches._waited(batch, account, AccountSuspended("AccountTakedown"))
    account.refresh_from_db()
    campaign.refresh_from_db()
    assert not account.api_enabled
    assert account.disabled_reason == AccountSuspended.reason
    assert campaign.status == "failed"
    assert campaign.error == AccountSuspended.reason
    assert campaign.tokens_refunded == 60
    assert buckets.balance(user).tokens - before == 60
    assert not Batch.objects.filter(campaign=campaign).exists()


def test_under_a_kill_switch_a_batch_goes_back_to_beat_without_a_retry(person):
    user = person()
    _, batch = campaign_with_batch(user)
    KillSwitch.objects.create(task_name="blocking.act_on_batch", engaged=True)
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "SUCCESS"
    batch.refresh_from_db()
    assert batch.state == "ready"
    # and beat does not send it again while the switch is engaged
    Batch.objects.filter(pk=batch.pk).update(not_before=timezone.now())
    assert pacing.dispatch(user.pk) == 0


def test_periodic_tasks_under_a_kill_switch_return_instead_of_retrying():
    KillSwitch.objects.create(task_name="blocking.release_expired", engaged=True)
    result = upkeep.release_expired.apply()
    assert result.state == "SUCCESS"
    assert result.result is None


def test_a_database_error_is_a_wait_retried_within_seconds(person, monkeypatch, settings):
    user = person()
    _, batch = campaign_with_batch(user)
    calls = []

    def away(*args, **kwargs):
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(batches, "_claimed", away)
    retries = []

    class Retry(Exception):
        pass

    def retry(countdown, max_retries):
        retries.append((countdown, max_retries))
        return Retry()

    monkeypatch.setattr(batches.act_on_batch, "retry", retry)
    with pytest.raises(Retry):
        batches.act_on_batch(batch.pk)
    assert calls
    assert retries == [(settings.INFRA_RETRY_S, None)]  # as often as it takes, seconds apart
    assert settings.INFRA_RETRY_S <= settings.MAX_COUNTDOWN_S


def ready_batch(user):
    _, batch = campaign_with_batch(user)
    Batch.objects.filter(pk=batch.pk).update(state="ready", queued_at=None)
    return batch


def published(monkeypatch, error=None):
    """Record the tasks dispatch publishes; with error, the broker refuses them."""
    sent = []

    def send_task(name, args, queue):
        if error is not None:
            raise error
        sent.append((name, args, queue))

    monkeypatch.setattr(pacing.celery_app, "send_task", send_task)
    return sent


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_broker_refused_goes_back_to_ready_at_once(person, monkeypatch):
    batch = ready_batch(person())
    published(monkeypatch, kombu.exceptions.OperationalError("Error 111 connecting"))
    pacing.dispatch(batch.owner_id)
    batch.refresh_from_db()
    # Not a queued row without a message, waiting for the stranded sweep: beat sends it again.
    assert (batch.state, batch.queued_at) == ("ready", None)
    sent = published(monkeypatch)
    assert pacing.dispatch(batch.owner_id) == 1
    assert sent == [("blocking.act_on_batch", [batch.pk], "bulk")]


@pytest.mark.django_db(transaction=True)
def test_a_broker_and_database_both_gone_after_the_commit_send_nothing_twice(person, monkeypatch):
    user = person()
    first, second = ready_batch(user), ready_batch(user)
    sent = []

    def send_task(name, args, queue):
        if sent:
            raise kombu.exceptions.OperationalError("Error 111 connecting")
        sent.append(args)

    def database_gone(batch_ids, queued_at):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pacing.celery_app, "send_task", send_task)
    monkeypatch.setattr(pacing, "back_to_ready", database_gone)
    # The commit went through: this is not the unsure commit, so nothing is asked or sent
    # again; the error is the task's to retry, and the stranded sweep has the second row.
    with pytest.raises(OperationalError):
        pacing.dispatch(user.pk)
    assert sent == [[first.pk]]
    assert set(Batch.objects.values_list("pk", "state")) == {
        (first.pk, "queued"),
        (second.pk, "queued"),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("reached", [True, False], ids=["commit-reached", "commit-lost"])
def test_a_commit_postgres_dropped_midway_is_asked_about_before_anything_is_sent(
    person, monkeypatch, reached
):
    batch = ready_batch(person())
    sent = published(monkeypatch)
    wrapper = connections["default"]
    commit, rollback = wrapper._commit, wrapper._rollback

    def dropped():
        # Postgres went away while committing: the commit reached it, or not; the answer
        # never came back either way.
        monkeypatch.setattr(wrapper, "_commit", commit)
        (commit if reached else rollback)()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(wrapper, "_commit", dropped)
    assert pacing.dispatch(batch.owner_id) == (1 if reached else 0)
    batch.refresh_from_db()
    if reached:  # queued, so its message goes now rather than after the stranded sweep
        assert batch.state == "queued"
        assert sent == [("blocking.act_on_batch", [batch.pk], "bulk")]
    else:  # still ready: the next dispatch sends it, and nothing went twice
        assert (batch.state, sent) == ("ready", [])


def test_a_lost_start_message_is_recovered_by_beat(person, client, settings):
    user = person()
    campaign = Campaign.objects.create(
        user=user,
        target_handle="crowd-5.fake.test",
        target_did="did:plc:tttttttttttttttttttttttt",
        action="block",
        scope="followers",
        expected=5,
        tokens_debited=5,
        next_page_at=timezone.now() - timedelta(seconds=1),
    )
    sent = []
    from blocking import campaigns

    def record(*args):
        sent.append(args)

    import unittest.mock as mock

    with mock.patch.object(campaigns.start_campaign, "delay", record):
        assert upkeep.release_due_pages.apply().result == 1
    assert sent == [(campaign.pk,)]


def test_the_stranded_sweep_is_ordered_marks_what_it_requeued_and_skips_disabled(person):
    alice, bob = person("alice"), person("bob")
    old = timezone.now() - timedelta(hours=2)
    _, a = campaign_with_batch(alice)
    _, b = campaign_with_batch(bob)
    _, gone = campaign_with_batch(alice, status="done")
    Batch.objects.update(queued_at=old)
    LinkedAccount.objects.filter(user=bob).update(api_enabled=False)
    assert upkeep.requeue_stranded.apply().result == 1
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.state, a.requeued) == ("ready", 1)
    assert (b.state, b.requeued) == ("queued", 0)
    assert not Batch.objects.filter(pk=gone.pk).exists()


def test_batches_queued_before_postgres_last_started_are_put_back_a_minute_after(person, settings):
    alice = person("alice")
    _, before = campaign_with_batch(alice)
    _, after = campaign_with_batch(alice)
    started = upkeep._postgres_started_at()
    Batch.objects.filter(pk=before.pk).update(queued_at=started - timedelta(seconds=1))
    settings.STRANDED_AFTER_S = 10**6  # only the restart can strand them here
    settings.STRANDED_AFTER_RESTART_S = 10**6  # not yet a minute after the start
    assert upkeep.requeue_stranded.apply().result == 0
    settings.STRANDED_AFTER_RESTART_S = 0
    assert upkeep.requeue_stranded.apply().result == 1
    before.refresh_from_db()
    after.refresh_from_db()
    # A crash could have undone the commit that finished it; the one queued since stays.
    assert (before.state, before.requeued) == ("ready", 1)
    assert (after.state, after.requeued) == ("queued", 0)


def test_blocks_made_while_their_campaign_was_cancelled_are_still_recorded_once(person):
    user = person()
    dids = ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb")
    campaign, batch = campaign_with_batch(user, dids=dids)
    made = dict(zip(dids, batch.rkeys, strict=True))
    Batch.objects.filter(pk=batch.pk).delete()  # the campaign was cancelled mid-call
    batches._save(batch, dict(made), [])
    batches._save(batch, dict(made), [])  # a second delivery of the same batch
    assert ActionRecord.objects.filter(owner=user).count() == 2
    campaign.refresh_from_db()
    assert campaign.acted == 2
    assert not Batch.objects.filter(owner=user).exists()  # nothing taken for a double


def test_a_block_held_meanwhile_through_another_campaign_is_lifted_again(person):
    user = person()
    did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    _, batch = campaign_with_batch(user, dids=(did,))
    ActionRecord.objects.create(owner=user, kind="block", subject_did=did, rkey="3kother222222")
    batches._save(batch, {did: batch.rkeys[0]}, [])
    undo = Batch.objects.get(owner=user, op="unblock")
    assert undo.rkeys == [batch.rkeys[0]]
    assert ActionRecord.objects.get(owner=user).rkey == "3kother222222"


def test_an_invalid_record_fails_alone_and_says_why(person, fakesky):
    user = person()
    good = fakesky.did("f1.crowd-3.fake.test")
    campaign, batch = campaign_with_batch(user, dids=(good, "not-a-did"))
    Batch.objects.filter(pk=batch.pk).update(rkeys=next_tids(2))
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "SUCCESS"
    campaign.refresh_from_db()
    assert (campaign.acted, campaign.failed) == (1, 1)
    assert campaign.error.startswith("Bluesky refused to block some accounts")
    assert fakesky.state(user.handle)["block_count"] == 1
    assert not Batch.objects.filter(pk=batch.pk).exists()  # not retried


def test_one_invalid_record_among_64_is_found_by_halves(person, fakesky):
    """The PDS refuses a whole call for one bad record: halves find it in 1 + 2 x 6 calls,
    where one call per record took 65."""
    user = person()
    good = [fakesky.did(f"f{i}.crowd-70.fake.test") for i in range(63)]
    campaign, batch = campaign_with_batch(user, dids=(*good[:40], "not-a-did", *good[40:]))
    Batch.objects.filter(pk=batch.pk).update(rkeys=next_tids(64))
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "SUCCESS"
    campaign.refresh_from_db()
    assert (campaign.acted, campaign.failed) == (63, 1)
    assert "must be a valid did" in campaign.error
    state = fakesky.state(user.handle)
    assert state["block_count"] == 63
    assert state["calls_by_method"]["com.atproto.repo.applyWrites"] == 13


def waiting_batch(campaign):
    """A ready batch of one account, waiting for the campaign's person."""
    return Batch.objects.create(
        owner_id=campaign.user_id, campaign=campaign, op="block", dids=["did:plc:b"],
        handles=[""], rkeys=next_tids(1), not_before=timezone.now(),
    )  # fmt: skip


def test_people_whose_last_page_has_not_drained_do_not_fill_beats_pass(
    person, django_user_model, settings
):
    """A pass releases at most 100 pages. The 100 campaigns due longest, whose people still
    have a page of batches waiting, are passed over before that limit is taken: the
    campaign behind them whose person has drained theirs gets its page in this pass."""
    from unittest import mock

    from blocking import campaigns

    settings.FOLLOWER_PAGE_SIZE = 2 * settings.BLOCK_BATCH_SIZE  # a page is two batches
    long_ago = timezone.now() - timedelta(minutes=10)

    def paging(user, due_at, waiting):
        campaign = Campaign.objects.create(
            user=user, target_handle="t.fake.test", target_did="did:plc:t", action="block",
            scope="followers", expected=1000, found=400, cursor="c1", next_page_at=due_at,
        )  # fmt: skip
        for _ in range(waiting):
            waiting_batch(campaign)
        return campaign

    for n in range(100):
        user = django_user_model.objects.create_user(f"full{n}", password="x")
        LinkedAccount.objects.create(
            user=user, handle=f"full{n}.fake.test", did=f"did:plc:full{n}", service_url="x"
        )
        paging(user, long_ago, waiting=2)
    drained = paging(person("drained"), long_ago + timedelta(minutes=5), waiting=1)
    sent = []
    with mock.patch.object(campaigns.fetch_follower_page, "delay", lambda *a: sent.append(a)):
        assert upkeep.release_due_pages.apply().result == 1
    assert sent == [(drained.pk, "c1")]


def test_the_batch_that_drains_a_page_releases_the_next_at_once_and_only_once(
    person, settings, django_capture_on_commit_callbacks
):
    """Pages come as the budget drains them, not a beat pass later: once a person has less
    than a page of batches waiting, a due campaign's next page is sent and its due time
    moved a lease ahead, so neither a second call nor beat sends it twice."""
    from unittest import mock

    from blocking import campaigns

    settings.FOLLOWER_PAGE_SIZE = 2 * settings.BLOCK_BATCH_SIZE  # a page is two batches
    user = person()
    campaign, batch = campaign_with_batch(user)
    Campaign.objects.filter(pk=campaign.pk).update(
        pages_done=False, cursor="c2", next_page_at=timezone.now()
    )
    waiting_batch(campaign)
    sent = []
    with (
        mock.patch.object(campaigns.fetch_follower_page, "delay", lambda *a: sent.append(a)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert not campaigns.release_next_page(campaign.pk)  # a page's worth still waits
        batch.delete()
        assert campaigns.release_next_page(campaign.pk)
        assert not campaigns.release_next_page(campaign.pk)  # claimed: a lease ahead now
        assert upkeep.release_due_pages.apply().result == 0
    assert sent == [(campaign.pk, "c2")]
    campaign.refresh_from_db()
    assert campaign.next_page_at > timezone.now() + timedelta(seconds=settings.ACTION_LEASE_S - 60)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"next_page_at": timezone.now() + timedelta(minutes=5)}, "a watch poll not due yet"),
        ({"pages_done": True}, "every page read"),
        ({"status": "cancelled"}, "ended"),
        ({"cursor": "", "found": 0}, "not taken in yet: start_campaign's"),
    ],
)
def test_no_page_is_released_early_for_a_campaign_that_is_not_due(person, change, why):
    from blocking import campaigns

    user = person()
    campaign, batch = campaign_with_batch(user)
    batch.delete()
    fields = {"pages_done": False, "cursor": "c2", "next_page_at": timezone.now(), **change}
    Campaign.objects.filter(pk=campaign.pk).update(**fields)
    assert not campaigns.release_next_page(campaign.pk), why
