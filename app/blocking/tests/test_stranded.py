"""A batch row is never left queued without a message (issue 22, "the stranded row").

A row is marked queued by pacing.dispatch and its message goes once that commits; the task
that takes the message moves the row on (done: gone; a wait or an error: back to ready).
A task that ends by an error no handler catches, with acks_late, still has its message
acknowledged, and a message that is never published never comes: either way the row waited
as queued for the stranded sweep (10 minutes) before anyone looked at it again. These run
the tasks here (eager), against the fake network where it can make the situation."""

from datetime import timedelta

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from bluesky.client import BlueskyClient
from bluesky.errors import NotFound, RateLimited
from bluesky.tids import next_tids
from django.conf import settings
from django.utils import timezone

from blocking import batches, pacing
from blocking.models import Batch
from blocking.network import client_for
from blocking.tests.test_retries import campaign_with_batch, published, ready_batch

pytestmark = pytest.mark.django_db


def queued_undo(user, rkeys):
    return Batch.objects.create(
        owner=user,
        op=Batch.Op.UNBLOCK,
        dids=[f"did:plc:{'u' * 23}{i}" for i in range(len(rkeys))],
        handles=[""] * len(rkeys),
        rkeys=list(rkeys),
        state=Batch.State.QUEUED,
        queued_at=timezone.now(),
        not_before=timezone.now(),
    )


def blocks_on_the_fake(user, fakesky, count):
    """`count` block records of this person's on the fake, made as Bluesky's app would."""
    rkeys = next_tids(count)
    with client_for(user.account, interactive=True) as network:
        network.block_many([f"did:plc:{'b' * 23}{i}" for i in range(count)], rkeys)
    assert fakesky.state(user.handle)["block_count"] == count
    return rkeys


def test_a_block_call_refused_whole_as_not_found_fails_its_accounts(person, monkeypatch):
    """No repo, no account: the whole call is refused, for every account in it. Terminal,
    so they fail (and say why) rather than waiting queued, or being tried for ever."""
    user = person()
    dids = ("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb")
    campaign, batch = campaign_with_batch(user, dids=dids)

    def no_repo(*args, **kwargs):
        raise NotFound("com.atproto.repo.applyWrites RepoNotFound: Could not find repo")

    monkeypatch.setattr(BlueskyClient, "block_many", no_repo)
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "SUCCESS"
    assert not Batch.objects.filter(pk=batch.pk).exists()
    campaign.refresh_from_db()
    assert (campaign.acted, campaign.failed, campaign.status) == (0, 2, "done")
    assert "Could not find repo" in campaign.error


def test_an_unblock_the_pds_refuses_lifts_the_rest_and_is_not_tried_for_ever(person, fakesky):
    """One key the PDS refuses (not a valid record key) fails the whole applyWrites with a
    400: the others are still lifted, the refused one is given up (logged), the row goes."""
    user = person()
    rkeys = blocks_on_the_fake(user, fakesky, 3)
    batch = queued_undo(user, [rkeys[0], "not/a/key", *rkeys[1:]])
    assert batches.undo_batch.apply(args=[batch.pk]).state == "SUCCESS"
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert fakesky.state(user.handle)["block_count"] == 0


def test_an_unblock_refused_whole_as_not_found_is_given_up(person, monkeypatch):
    user = person()
    batch = queued_undo(user, next_tids(3))
    calls = []

    def no_repo(self, rkeys):
        calls.append(rkeys)
        raise NotFound("com.atproto.repo.applyWrites RepoNotFound: Could not find repo")

    monkeypatch.setattr(BlueskyClient, "unblock_many", no_repo)
    assert batches.undo_batch.apply(args=[batch.pk]).state == "SUCCESS"
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert calls == [batch.rkeys]  # the whole call's refusal: not tried record by record


@pytest.mark.parametrize("op", ["block", "unblock"])
def test_an_error_no_handler_expects_hands_the_row_back_instead_of_stranding_it(
    person, monkeypatch, caplog, op
):
    """The soft time limit (or any error nobody wrote a handler for) ends the task: its
    row goes back to beat as after a network error, counted and with back-off; the
    journal names the row the task ran for, and what ended it."""
    user = person()
    if op == "block":
        _, batch = campaign_with_batch(user)
        task, call = batches.act_on_batch, "block_many"
    else:
        batch, task, call = queued_undo(user, next_tids(2)), batches.undo_batch, "unblock_many"

    def out_of_time(*args, **kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(BlueskyClient, call, out_of_time)
    assert task.apply(args=[batch.pk]).state == "FAILURE"  # still a failure, and logged
    batch.refresh_from_db()
    assert (batch.state, batch.queued_at, batch.failures) == ("ready", None, 1)
    assert batch.not_before > timezone.now()
    assert f"batch {batch.pk}: SoftTimeLimitExceeded" in caplog.text
    assert f"{task.name} batch {batch.pk} took" in caplog.text


def test_an_error_after_the_row_was_handed_back_does_not_count_twice(person, monkeypatch):
    user = person()
    _, batch = campaign_with_batch(user)
    hand_back = pacing.hand_back

    def rate_limited(*args, **kwargs):
        raise RateLimited("429", reset_at=int(timezone.now().timestamp()) + 60)

    def hand_back_then_fail(*args, **kwargs):
        hand_back(*args, **kwargs)
        raise RuntimeError("a bug after the hand-back")

    monkeypatch.setattr(BlueskyClient, "block_many", rate_limited)
    monkeypatch.setattr(pacing, "hand_back", hand_back_then_fail)
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "FAILURE"
    batch.refresh_from_db()
    assert (batch.state, batch.failures) == ("ready", 0)  # the wait it was given stands
    assert batch.not_before > timezone.now() + timedelta(seconds=50)


def test_a_block_batch_that_keeps_dying_gives_up_like_one_that_keeps_failing(person, monkeypatch):
    user = person()
    campaign, batch = campaign_with_batch(user)
    Batch.objects.filter(pk=batch.pk).update(failures=settings.MAX_NETWORK_FAILURES - 1)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(BlueskyClient, "block_many", broken)
    assert batches.act_on_batch.apply(args=[batch.pk]).state == "FAILURE"
    assert not Batch.objects.filter(pk=batch.pk).exists()
    campaign.refresh_from_db()
    assert campaign.failed == 1
    assert "Bluesky kept failing" in campaign.error


@pytest.mark.django_db(transaction=True)
def test_a_publish_that_fails_for_any_reason_puts_the_unsent_rows_back(person, monkeypatch):
    """Not only the broker's refusal: whatever stops the on-commit publish midway (a bug,
    the soft time limit) leaves no row marked queued without its message."""
    user = person()
    first, second = ready_batch(user), ready_batch(user)
    sent = []

    def send_task(name, args, queue):
        if sent:
            raise SoftTimeLimitExceeded()
        sent.append(args)

    monkeypatch.setattr(pacing.celery_app, "send_task", send_task)
    with pytest.raises(SoftTimeLimitExceeded):
        pacing.dispatch(user.pk)
    assert sent == [[first.pk]]
    assert dict(Batch.objects.values_list("pk", "state")) == {
        first.pk: "queued",
        second.pk: "ready",
    }
    published(monkeypatch)
    assert pacing.dispatch(user.pk) == 1
