"""What the end-to-end tests share: start a campaign through the web page, wait for it,
lift the network's budget, size an egress address's budget like the fake's."""

import contextlib
from unittest import mock

from conftest import wait_until
from django.conf import settings

from blocking import pacing, tasks
from blocking.models import AddressBudget, Campaign


def unlimited(fakesky):
    """Lift the network's write budget: Bluesky's real 5,000 points an hour would make a
    campaign of thousands take hours. The pacing tests exercise the limits themselves."""
    fakesky.configure(write_points_per_hour=1_000_000, write_points_per_day=1_000_000)


def start(client, target, scope="followers", action="block", duration="4"):
    response = client.post(
        "/campaigns/new/",
        {"target": target, "action": action, "scope": scope, "duration": duration},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    return Campaign.objects.get(pk=int(response["Location"].rstrip("/").rsplit("/", 1)[1]))


@contextlib.contextmanager
def tasks_here(capture_on_commit):
    """Run a campaign's tasks in this process, one by one as the test calls them: what they
    leave for on-commit runs at once, nothing is sent to a worker (pacing.dispatch and the
    next page's message are mocks). capture_on_commit: django_capture_on_commit_callbacks."""
    with (
        mock.patch.object(pacing, "dispatch"),
        mock.patch.object(tasks.fetch_follower_page, "delay"),
        capture_on_commit(execute=True),
    ):
        yield


def finished(campaign, timeout):
    def check():
        campaign.refresh_from_db()
        return campaign.status != Campaign.Status.RUNNING

    wait_until(check, timeout, interval=0.5, message=f"campaign {campaign.pk} to finish")
    return campaign


def address_budget(requests, window_s, share=0.97, reserve=30, name=None):
    """Size the bucket of an egress address (by default this process's, EGRESS_ADDRESS) for
    a fake limit of `requests` per `window_s` (what the settings would make of
    BLUESKY_ADDRESS_*), full now."""
    allowed = requests * share
    capacity = max(reserve + 10, allowed / 30)
    from django.utils import timezone

    AddressBudget.objects.update_or_create(
        name=name or settings.EGRESS_ADDRESS,
        defaults={
            "tokens": capacity,
            "capacity": capacity,
            "refill_per_s": (allowed - capacity) / window_s,
            "refilled_at": timezone.now(),
        },
    )
