"""How long a campaign still needs, from the network's budgets rather than our hopes.

Bluesky lets one account spend 5,000 write points an hour and 35,000 a day, and
creating a block record costs 3 points: about 1,666 blocks an hour, and no more
than about 11,666 a day. The estimate assumes the account's budget is unspent
now, plus any wait the network last imposed (a refusal, or points it reported
spent: LinkedAccount.budget_wait_until), and that every running block campaign
of the person shares it, so a campaign ends no sooner than all of them together
could. Follower pages come at most one per SHOESTRING_FOLLOWER_PAGE_DELAY_S
(none by default: as the budget drains them), which bounds it too.
"""

import math
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Sum
from django.utils import timezone

from .models import Action, Campaign


def seconds_to_spend(points, per_hour, per_day):
    """Seconds until `points` are spent when each hour's window allows per_hour and each
    day's per_day: a window's budget goes at once, then the work waits for the next one."""
    if points <= 0:
        return 0
    day_waits = (points - 1) // per_day
    rest = points - day_waits * per_day
    hour_waits = (rest - 1) // per_hour
    return day_waits * 86_400 + hour_waits * 3_600


def duration_text(seconds):
    """'under a minute', '12 min', '7 h 30 min', '3 days 4 h'."""
    minutes = math.ceil(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    day_word = "day" if days == 1 else "days"
    return f"{days} {day_word} {hours} h" if hours else f"{days} {day_word}"


@dataclass(frozen=True)
class Estimate:
    seconds: int
    text: str


def blocks_per_hour():
    return settings.BLUESKY_WRITE_POINTS_PER_HOUR // settings.BLUESKY_POINTS_PER_BLOCK


def blocks_per_day():
    return settings.BLUESKY_WRITE_POINTS_PER_DAY // settings.BLUESKY_POINTS_PER_BLOCK


def for_campaign(campaign, account=None, now=None):
    """The honest time left for a running campaign, or None when it is over."""
    if campaign.status != Campaign.Status.RUNNING:
        return None
    now = now or timezone.now()
    remaining = max(0, campaign.expected - campaign.processed)
    pages_left, next_page = 0, 0.0
    if not campaign.pages_done:
        pages_left = math.ceil(
            max(0, campaign.expected - campaign.found) / settings.FOLLOWER_PAGE_SIZE
        )
        if campaign.next_page_at:
            next_page = max(0.0, (campaign.next_page_at - now).total_seconds())
    return _estimate(
        campaign.user_id,
        campaign.action,
        remaining,
        pages_left,
        next_page,
        account,
        now,
        exclude=campaign.pk,
    )


def for_new(user_id, action, accounts, account=None, now=None):
    """How long a campaign of `accounts` would take if started now: the preview's figure."""
    pages = math.ceil(accounts / settings.FOLLOWER_PAGE_SIZE)
    return _estimate(user_id, action, accounts, pages, 0.0, account, now or timezone.now())


def _estimate(user_id, action, remaining, pages_left, next_page, account, now, exclude=None):
    # The network's budget: this campaign and the person's other running blocks share it.
    writes = 0
    if action == Action.BLOCK:
        others = (
            Campaign.objects.filter(
                user_id=user_id, status=Campaign.Status.RUNNING, action=Action.BLOCK
            )
            .exclude(pk=exclude)
            .aggregate(
                left=Sum(F("expected") - F("acted") - F("skipped") - F("failed"), default=0)
            )["left"]
        )
        writes = seconds_to_spend(
            (remaining + max(0, others)) * settings.BLUESKY_POINTS_PER_BLOCK,
            settings.BLUESKY_WRITE_POINTS_PER_HOUR,
            settings.BLUESKY_WRITE_POINTS_PER_DAY,
        )
    # The pages of accounts still to read, one every page delay.
    paging = 0
    if pages_left:
        paging = int(next_page + max(0, pages_left - 1) * settings.FOLLOWER_PAGE_DELAY_S)
    waiting = 0
    until = account.budget_wait_until(now) if account is not None else None
    if until:
        waiting = int((until - now).total_seconds())
    # Even work inside the budget takes the workers a little while.
    seconds = max(writes, paging, 60 if remaining else 0) + waiting
    limit = "the demo network's limit" if settings.DEMO_NETWORK else "Bluesky's limit"
    if action != Action.BLOCK:
        text = f"About {duration_text(seconds)}"
    elif writes >= 86_400:
        text = f"About {duration_text(seconds)} at {limit} of ~{blocks_per_day():,} blocks a day"
    else:
        text = f"About {duration_text(seconds)} at {limit} of ~{blocks_per_hour():,} blocks an hour"
    return Estimate(seconds, text)
