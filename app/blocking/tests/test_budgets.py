"""The two budgets as pacing reads them (no broker: what is checked is what would be sent)."""

import os
from datetime import timedelta

import pytest
from bluesky.errors import RateLimited
from conftest import run_manage
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from blocking import batches, pacing
from blocking.models import AddressBudget, Batch, LinkedAccount
from blocking.tests.helpers import address_budget

pytestmark = pytest.mark.django_db


def ready_batches(user, count, size=50):
    for i in range(count):
        Batch.objects.create(
            owner=user,
            op="block",
            dids=[f"did:plc:{i}x{j}" for j in range(size)],
            handles=[""] * size,
            rkeys=[f"3k{i}x{j}" for j in range(size)],
            not_before=timezone.now() - timedelta(seconds=1),
        )


def test_a_person_gets_only_what_their_reported_write_budget_pays_for(person, settings):
    user = person()
    reset = timezone.now() + timedelta(minutes=20)
    LinkedAccount.objects.filter(user=user).update(
        write_points_left=200, write_window_reset_at=reset
    )
    ready_batches(user, 3)
    assert pacing.dispatch(user.pk) == 1  # 150 points; the next would overspend
    assert pacing.dispatch(user.pk) == 0  # the first is still in flight and counted
    account = LinkedAccount.objects.get(user=user)
    assert account.budget_wait_until() is None  # 200 points still pay for a batch
    LinkedAccount.objects.filter(user=user).update(write_points_left=40)
    assert LinkedAccount.objects.get(user=user).budget_wait_until() == reset


def test_a_batch_the_budget_pays_only_part_of_is_cut_and_the_rest_waits(person, settings):
    settings.BLOCK_BATCH_SIZE = 200
    user = person()
    reset = timezone.now() + timedelta(minutes=20)
    LinkedAccount.objects.filter(user=user).update(
        write_points_left=330, write_window_reset_at=reset
    )
    ready_batches(user, 1, size=200)
    first = Batch.objects.get()
    assert pacing.dispatch(user.pk) == 1
    sent = Batch.objects.get(pk=first.pk)
    rest = Batch.objects.exclude(pk=first.pk).get()
    assert (sent.state, len(sent.dids)) == ("queued", 110)  # 330 points, 3 a block
    assert (rest.state, len(rest.dids)) == ("ready", 90)
    assert sent.dids + rest.dids == first.dids
    assert sent.rkeys + rest.rkeys == first.rkeys
    # 0 points left after the part in flight: the rest waits for the window.
    assert pacing.dispatch(user.pk) == 0
    # A budget that pays for less than a quarter of a batch sends nothing now.
    Batch.objects.filter(pk=sent.pk).delete()
    LinkedAccount.objects.filter(user=user).update(write_points_left=3 * 49)
    assert pacing.dispatch(user.pk) == 0
    assert LinkedAccount.objects.get(user=user).budget_wait_until() == reset


def test_no_more_than_the_in_flight_limit_per_person(person, settings):
    user = person()
    ready_batches(user, 5)
    assert pacing.dispatch(user.pk) == settings.MAX_IN_FLIGHT_PER_ACCOUNT
    assert Batch.objects.filter(owner=user, state="queued").count() == 2


def test_bulk_work_leaves_the_interactive_reserve(settings):
    address_budget(300, 30, reserve=settings.INTERACTIVE_RESERVE)
    capacity = AddressBudget.objects.get().capacity
    AddressBudget.objects.update(tokens=settings.INTERACTIVE_RESERVE + 1, refill_per_s=0.001)
    assert pacing.try_address_budget(1) == 0
    assert pacing.try_address_budget(1) > 0  # bulk: only the reserve is left
    assert pacing.try_address_budget(1, interactive=True) == 0  # a person waiting: served
    with pytest.raises(pacing.AddressBudgetSpent):
        pacing.take_address_budget(1, max_wait_s=0.1)
    assert capacity >= settings.INTERACTIVE_RESERVE + 10


def test_each_egress_address_draws_on_a_budget_of_its_own(settings):
    reserve = settings.INTERACTIVE_RESERVE
    for name in ("worker-a", "worker-b"):
        address_budget(300, 30, reserve=reserve, name=name)
    AddressBudget.objects.update(refill_per_s=0.001)
    capacity = AddressBudget.objects.get(name="worker-a").capacity
    bulk_share = int(capacity - reserve)

    def tokens():
        return {
            name: round(left, 1)
            for name, left in AddressBudget.objects.values_list("name", "tokens")
        }

    settings.EGRESS_ADDRESS = "worker-a"
    assert pacing.try_address_budget(bulk_share) == 0
    assert pacing.try_address_budget(1) > 0  # worker-a's bulk share is spent
    assert tokens() == {"worker-a": capacity - bulk_share, "worker-b": capacity}
    settings.EGRESS_ADDRESS = "worker-b"
    assert pacing.try_address_budget(bulk_share) == 0  # worker-b's is whole
    pacing.force_address_budget(5)  # a page's calls count against their own address too
    pacing.take_address_budget(1, interactive=True)
    assert tokens() == {"worker-a": capacity - bulk_share, "worker-b": capacity - bulk_share - 6}


@pytest.mark.django_db(transaction=True)
def test_processes_behind_one_egress_address_share_its_budget():
    """Another process (a worker of the same host) named by SHOESTRING_EGRESS_ADDRESS spends
    the address's bulk share; this one, behind the same address, then finds it spent."""
    for name in ("worker-a", "worker-b"):
        address_budget(300, 30, name=name)
    AddressBudget.objects.update(refill_per_s=0.001)
    spend = "from blocking import pacing; print(pacing.try_address_budget(10))"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_NAME=connection.settings_dict["NAME"],
        SHOESTRING_EGRESS_ADDRESS="worker-a",
        SHOESTRING_INTERACTIVE_RESERVE="30",
    )
    result = run_manage(env, "shell", "--no-imports", "-c", spend)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "0.0"
    with override_settings(EGRESS_ADDRESS="worker-a", INTERACTIVE_RESERVE=30):
        assert pacing.try_address_budget(1) > 0
    with override_settings(EGRESS_ADDRESS="worker-b", INTERACTIVE_RESERVE=30):
        assert pacing.try_address_budget(10) == 0


def test_the_bucket_keeps_any_window_under_the_share_of_the_limit(settings):
    capacity, rate = pacing.address_bucket()
    allowed = settings.BLUESKY_ADDRESS_REQUESTS_PER_WINDOW * settings.ADDRESS_BUDGET_SHARE
    assert capacity + rate * settings.BLUESKY_ADDRESS_WINDOW_S <= allowed + 1e-6
    # and sustained, it lets the appliance reach 90% of the address's ceiling
    assert (
        rate * settings.BLUESKY_ADDRESS_WINDOW_S
        >= 0.9 * settings.BLUESKY_ADDRESS_REQUESTS_PER_WINDOW
    )


def test_a_429_whose_window_holds_the_whole_batch_cuts_nothing(person):
    """The window's size comes with every 429 for the account: a batch it holds whole is
    not cut (cutting made an empty row of the rest, a task for nothing each time)."""
    user = person()
    ready_batches(user, 1, size=2)
    batch = Batch.objects.get(owner=user)
    Batch.objects.filter(pk=batch.pk).update(state="queued", queued_at=timezone.now())
    reset = int(timezone.now().timestamp()) + 60
    batches._waited(batch, user.account, RateLimited("429", reset, "account", limit=5000))
    assert list(Batch.objects.values_list("pk", "state", "dids")) == [
        (batch.pk, "ready", batch.dids)
    ]


def test_work_that_costs_no_write_points_goes_when_the_budget_is_overspent(person):
    """In-flight blocks may spend more than the points last reported (the budget goes below
    zero); a mute batch costs none and still goes, and the dispatch does not fail (it
    divided by its zero points, and beat's pass stopped at this person, every time)."""
    user = person()
    ready_batches(user, 1)
    Batch.objects.filter(owner=user).update(state="queued", queued_at=timezone.now())
    mute = Batch.objects.create(
        owner=user,
        op="mute",
        dids=["did:plc:muted"],
        handles=[""],
        rkeys=[""],
        not_before=timezone.now() - timedelta(seconds=1),
    )
    LinkedAccount.objects.filter(user=user).update(
        write_points_left=0, write_window_reset_at=timezone.now() + timedelta(minutes=5)
    )
    assert pacing.dispatch(user.pk) == 1
    mute.refresh_from_db()
    assert mute.state == "queued"
