"""The seed's naive settings that only the benchmark's naive host uses (docs/benchmarks.md):
one task per blocked account, and the next follower page as a Celery countdown task."""

import os
from unittest import mock

import pytest
from conftest import run_manage

from blocking import tasks
from blocking.models import Campaign
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


def fetch_first_page(campaign, queued, capture_on_commit):
    """Run the first page's task here; returns the mock of the next page's countdown."""
    with (
        mock.patch.object(tasks.act_on_batch, "delay") as batch,
        mock.patch.object(tasks.fetch_follower_page, "apply_async") as next_page,
        capture_on_commit(execute=True),
    ):
        tasks.fetch_follower_page.apply(args=(campaign.pk, ""))
    queued.extend(call.args for call in batch.call_args_list)
    campaign.refresh_from_db()
    return next_page


def test_by_default_the_next_page_is_a_due_time_released_by_beat(
    person, settings, django_capture_on_commit_callbacks
):
    settings.FOLLOWER_PAGE_SIZE = 100
    campaign = followers_campaign(person(), 250)
    queued = []
    next_page = fetch_first_page(campaign, queued, django_capture_on_commit_callbacks)
    assert campaign.next_page_at is not None
    next_page.assert_not_called()
    assert [len(dids) for _, dids in queued] == [50, 50]


def test_naive_release_holds_the_next_page_as_a_countdown_with_one_task_per_account(
    person, settings, django_capture_on_commit_callbacks
):
    settings.FOLLOWER_PAGE_SIZE = 100
    settings.FOLLOWER_PAGE_RELEASE = "countdown"
    settings.BLOCK_BATCH_SIZE = 1
    campaign = followers_campaign(person(), 250)
    queued = []
    next_page = fetch_first_page(campaign, queued, django_capture_on_commit_callbacks)
    # Nothing for beat to release: the only copy of the next page is the countdown task.
    assert campaign.next_page_at is None
    assert not campaign.pages_done
    next_page.assert_called_once_with(
        (campaign.pk, campaign.cursor), countdown=settings.FOLLOWER_PAGE_DELAY_S
    )
    assert len(queued) == 100
    assert all(len(dids) == 1 for _, dids in queued)


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
