"""What the end-to-end tests share: start a campaign through the web page, wait for it,
lift the network's budget, size the shared address budget like the fake's."""

from conftest import wait_until

from blocking.models import AddressBudget, Campaign
from blocking.pacing import ADDRESS


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


def finished(campaign, timeout):
    def check():
        campaign.refresh_from_db()
        return campaign.status != Campaign.Status.RUNNING

    wait_until(check, timeout, interval=0.5, message=f"campaign {campaign.pk} to finish")
    return campaign


def address_budget(requests, window_s, share=0.9, reserve=30):
    """Size the workers' shared per-address bucket for a fake limit of `requests` per
    `window_s` (what the settings would make of BLUESKY_ADDRESS_*), full now."""
    allowed = requests * share
    capacity = max(reserve + 10, allowed / 10)
    from django.utils import timezone

    AddressBudget.objects.update_or_create(
        name=ADDRESS,
        defaults={
            "tokens": capacity,
            "capacity": capacity,
            "refill_per_s": (allowed - capacity) / window_s,
            "refilled_at": timezone.now(),
        },
    )
