"""The seed's naive settings that only the benchmark's naive host uses (docs/benchmarks.md):
one blocked account per Batch row (one task and one applyWrites each), and the next follower
page as a Celery countdown task instead of a due row that beat releases."""

import os
from unittest import mock

import pytest
from conftest import run_manage

from blocking import pacing, tasks
from blocking.models import Batch, Campaign
from blocking.network import client_for

pytestmark = pytest.mark.django_db


def followers_campaign(user, count):
    handle = f"crowd-{count}.fake.test"
    with client_for(user.account) as client:
        target = client.resolve(handle)
    return Campaign.objects.create(
        user=user,
        target_handle=handle,
        target_did=target.did,
        action="block",
        scope="followers",
        expected=count,
        tokens_debited=count,
    )


def fetch_first_page(campaign, capture_on_commit):
    """Run the first page's task here (nothing sent to a worker); returns the mock of the
    next page's countdown and the sizes of the Batch rows the page became."""
    with (
        mock.patch.object(pacing, "dispatch"),
        mock.patch.object(tasks.fetch_follower_page, "apply_async") as next_page,
        capture_on_commit(execute=True),
    ):
        tasks.fetch_follower_page.apply(args=(campaign.pk, ""))
    campaign.refresh_from_db()
    sizes = [
        len(dids) for dids in Batch.objects.filter(campaign=campaign).values_list("dids", flat=True)
    ]
    return next_page, sizes


def test_by_default_the_next_page_is_a_due_row_released_by_beat(
    person, settings, django_capture_on_commit_callbacks
):
    settings.FOLLOWER_PAGE_SIZE = 100
    campaign = followers_campaign(person(), 250)
    next_page, sizes = fetch_first_page(campaign, django_capture_on_commit_callbacks)
    assert campaign.next_page_at is not None
    next_page.assert_not_called()
    assert sizes == [100]  # a page of 100 is one batch of up to 200


def test_naive_release_holds_the_next_page_as_a_countdown_with_one_block_per_batch(
    person, settings, django_capture_on_commit_callbacks
):
    settings.FOLLOWER_PAGE_SIZE = 100
    settings.FOLLOWER_PAGE_DELAY_S = 600  # the naive host's (inventory/bench/host_vars)
    settings.FOLLOWER_PAGE_RELEASE = "countdown"
    settings.BLOCK_BATCH_SIZE = 1
    campaign = followers_campaign(person(), 250)
    next_page, sizes = fetch_first_page(campaign, django_capture_on_commit_callbacks)
    # Nothing for beat to release: the only copy of the next page is the countdown task.
    assert campaign.next_page_at is None
    assert not campaign.pages_done
    assert campaign.cursor
    next_page.assert_called_once_with(
        (campaign.pk, campaign.cursor), countdown=settings.FOLLOWER_PAGE_DELAY_S
    )
    assert sizes == [1] * 100


def test_naive_release_leaves_the_last_page_to_no_one(
    person, settings, django_capture_on_commit_callbacks
):
    settings.FOLLOWER_PAGE_SIZE = 500
    settings.FOLLOWER_PAGE_RELEASE = "countdown"
    campaign = followers_campaign(person(), 250)
    next_page, sizes = fetch_first_page(campaign, django_capture_on_commit_callbacks)
    assert campaign.pages_done
    next_page.assert_not_called()
    assert sum(sizes) == 250


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SHOESTRING_FOLLOWER_PAGE_RELEASE", "cron", "must be beat or countdown, not 'cron'"),
        ("SHOESTRING_BLOCK_BATCH_SIZE", "500", "must be 1-200 (writes per applyWrites), not 500"),
    ],
)
def test_bad_naive_settings_refuse_to_start(name, value, message):
    result = run_manage(dict(os.environ, **{name: value}), "check")
    assert result.returncode != 0
    assert message in result.stderr
