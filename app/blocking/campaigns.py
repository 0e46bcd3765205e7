"""A campaign from start to end: the target taken in, follower pages turned into Batch rows,
and the ways it ends (done, failed, cancelled), with the unspent tokens given back."""

import logging
import random
from collections import Counter
from datetime import timedelta

from bluesky.errors import CredentialsRevoked, NotFound, ProviderError, RateLimited
from bluesky.tids import next_tids
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import buckets, pacing
from .models import (
    Action,
    ActionRecord,
    Batch,
    Campaign,
    LinkedAccount,
    Scope,
    SkipReason,
    Trusted,
    one_or_none,
)
from .network import client_for
from .taskbase import DURABLE, task

log = logging.getLogger(__name__)
Status = Campaign.Status

PAGE_FAILED = "Bluesky kept failing while listing the target's followers; the rest was not blocked."
POST_PAGE_FAILED = (
    "Bluesky kept failing while listing who engaged with the post; the rest was not blocked."
)
POST_GONE = "The post no longer exists."
WATCH_WAITS = "Watching waits for tokens: newcomers are blocked once your bucket refills."
# What ends a page's reading early: it keeps what it read, and the task then waits, backs
# off or stops the campaign by the error's kind.
PAGE_STOPS = (RateLimited, ProviderError, CredentialsRevoked, NotFound, pacing.AddressBudgetSpent)
# A watched campaign's position between its passes: the next page is a newest-first poll.
WATCHING = "~watching"


def backoff_s(failures):
    """Seconds before the next try after `failures` network errors: exponential, jittered."""
    wait = settings.RETRY_BASE_S * 2 ** max(0, failures - 1) * random.uniform(0.5, 1.5)  # noqa: S311
    return min(wait, settings.MAX_BACKOFF_S)


def usable_account(user_id):
    account = one_or_none(LinkedAccount.objects.filter(user_id=user_id))
    if account is None or not account.api_enabled:
        return None
    return account


def finish_if_complete(campaign_id):
    """Done once every account found is processed: the tokens of the accounts it did not
    block (already blocked, followed, failed, or found twice on a post) come back."""
    with transaction.atomic():
        finished = Campaign.objects.filter(
            pk=campaign_id,
            status=Status.RUNNING,
            pages_done=True,
            found__lte=F("acted") + F("skipped") + F("failed"),
        ).update(status=Status.DONE, next_page_at=None)
        if not finished:
            return
        campaign = Campaign.objects.get(pk=campaign_id)
        unspent = max(0, campaign.tokens_debited - campaign.tokens_refunded - campaign.acted)
        if unspent:
            Campaign.objects.filter(pk=campaign_id).update(
                tokens_refunded=F("tokens_refunded") + unspent
            )
            buckets.credit(campaign.user_id, unspent)


def end(campaigns, status, error=""):
    """End these running campaigns: drop their waiting work and give back the tokens they
    did not spend (one per account not blocked). Returns how many ended."""
    ended = 0
    with transaction.atomic():
        for campaign in campaigns.select_for_update().filter(status=Status.RUNNING):
            unspent = max(0, campaign.tokens_debited - campaign.tokens_refunded - campaign.acted)
            Campaign.objects.filter(pk=campaign.pk).update(
                status=status,
                error=error[:300],
                next_page_at=None,
                tokens_refunded=F("tokens_refunded") + unspent,
            )
            Batch.objects.filter(campaign_id=campaign.pk).delete()
            if unspent:
                buckets.credit(campaign.user_id, unspent)
            ended += 1
    return ended


def account_refused(account, error):
    """The network will not act for this account until its person does: stop, say why."""
    LinkedAccount.objects.filter(pk=account.pk).update(
        api_enabled=False,
        disabled_reason=error.reason,
        access_jwt_encrypted="",
        refresh_jwt_encrypted="",
    )
    end(Campaign.objects.filter(user_id=account.user_id), Status.FAILED, error.reason)
    log.warning("account %s: %s; API access disabled", account.pk, error.__class__.__name__)


def new_batches(campaign, subjects, interactive=False):
    """Batch rows for (did, handle) pairs, each block given its record key now."""
    op = Batch.Op.BLOCK if campaign.action == Action.BLOCK else Batch.Op.MUTE
    ops = [op, Batch.Op.MUTE] if campaign.also_mute and op == Batch.Op.BLOCK else [op]
    size = settings.BLOCK_BATCH_SIZE
    now = timezone.now()
    batches = []
    for start in range(0, len(subjects), size):
        chunk = subjects[start : start + size]
        batches.extend(
            Batch(
                owner_id=campaign.user_id,
                campaign_id=campaign.pk,
                op=each,
                dids=[did for did, _ in chunk],
                handles=[handle for _, handle in chunk],
                rkeys=next_tids(len(chunk)) if each == Batch.Op.BLOCK else [""] * len(chunk),
                interactive=interactive,
                not_before=now,
            )
            for each in ops
        )
    Batch.objects.bulk_create(batches)
    return len(batches)


def trusted(owner_id, dids):
    """The DIDs of these on the person's never-block list."""
    if not dids:
        return set()
    found = Trusted.objects.filter(owner_id=owner_id, did__any=list(dids))
    return set(found.values_list("did", flat=True))


def merged(counts, more):
    """counts + more, as the JSON a campaign keeps (only the non-zero ones added)."""
    counts = dict(counts)
    for key, value in more.items():
        if value:
            counts[key] = counts.get(key, 0) + value
    return counts


def count_skips(campaign_id, reasons):
    """Add to a campaign's skipped_by (its row locked: another worker may add too)."""
    if not any(reasons.values()):
        return
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is not None:
            campaign.skipped_by = merged(campaign.skipped_by, reasons)
            campaign.save(update_fields=["skipped_by"])


def held(owner_id, kind, dids):
    """The DIDs of these the person already holds a block (or mute) of."""
    rows = ActionRecord.objects.filter(owner_id=owner_id, kind=kind, subject_did__any=dids)
    return set(rows.values_list("subject_did", flat=True))


@task("blocking.start_campaign")
def start_campaign(self, campaign_id):
    """Take a campaign in (take_in) when the request that made it did not: its kill switch
    was engaged then, or its first page's message was lost. Beat sends it again once the
    campaign's lease is over; idempotent."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().filter(pk=campaign_id).first()
        if campaign is not None:
            take_in(campaign)
    finish_if_complete(campaign_id)


def take_in(campaign):
    """In the caller's transaction: the target itself as an interactive batch (first in
    line) and the first follower page sent, both once the transaction commits. The request
    that starts a campaign calls it, so a single block reaches the network in one task.
    Does nothing to a campaign that has ended or has been taken in already."""
    if campaign.status != Status.RUNNING or campaign.found or campaign.cursor:
        return
    changes = {}
    if Scope.takes_target(campaign.scope):
        target, reason = [campaign.target_did], None
        if trusted(campaign.user_id, target):
            reason = SkipReason.TRUSTED
        elif held(campaign.user_id, campaign.action, target):
            reason = SkipReason.ALREADY
        if reason is None:
            new_batches(campaign, [(campaign.target_did, campaign.target_handle)], True)
        changes = {
            "found": 1,
            "skipped": 0 if reason is None else 1,
            "skipped_by": {reason: 1} if reason else {},
        }
    if campaign.scope == Scope.ACCOUNT:
        changes.update(pages_done=True, next_page_at=None)
    else:
        changes["next_page_at"] = timezone.now() + timedelta(seconds=settings.ACTION_LEASE_S)
        transaction.on_commit(lambda: fetch_follower_page.delay(campaign.pk, ""), robust=True)
    Campaign.objects.filter(pk=campaign.pk).update(**changes)
    # Robust: what is lost here is data that beat sends again (the lease, ready batches).
    transaction.on_commit(lambda: pacing.dispatch(campaign.user_id), robust=True)


def page_start(campaign, position):
    """The list a page reads and its cursor there: the target's followers (the campaign's
    position is their cursor), or one group of a post's engagers ("<group>:<cursor>")."""
    if not campaign.post_uri:
        return "followers", position or None
    group, _, cursor = position.partition(":")
    return group or campaign.post_groups[0], cursor or None


def _position(campaign, group, cursor):
    """Where the next page starts, or None when every list is read to its end."""
    if not campaign.post_uri:
        return cursor
    if cursor:
        return f"{group}:{cursor}"
    following = campaign.post_groups[campaign.post_groups.index(group) + 1 :]
    return f"{following[0]}:" if following else None


def _list_page(client, campaign, group, cursor):
    if group == "followers":
        return client.followers_page(campaign.target_did, cursor, limit=100)
    return client.engagers_page(group, campaign.post_uri, cursor, limit=100)


def _read_page(account, campaign, position):
    """Read up to a page of accounts from `position`, going on to a post's next group when
    one ends. Stops early (keeping what it read) on a wait or an error, which it returns
    for the caller to handle after saving the progress. Returns the accounts, how many
    each list gave, where the next page starts and the error."""
    profiles, counts, stopped = [], {}, None
    group, cursor = page_start(campaign, position)
    next_position = position or None
    try:
        with client_for(account, interactive=False) as client:
            while len(profiles) < settings.FOLLOWER_PAGE_SIZE:
                page = _list_page(client, campaign, group, cursor)
                profiles.extend(page.followers)
                counts[group] = counts.get(group, 0) + len(page.followers)
                next_position = _position(campaign, group, page.cursor)
                if not next_position:
                    break
                group, cursor = page_start(campaign, next_position)
    except PAGE_STOPS as error:
        stopped = error
    return profiles, counts, next_position, stopped


def _read_newest(account, campaign):
    """A watch poll: each list newest first, page by page, until a page shows someone the
    campaign already knows, or nobody (or the list ends, or WATCH_MAX_PAGES): newcomers are
    on top. The AppView leaves out accounts the person blocks, so who it shows is mostly new,
    and once the first pass is blocked a page below the newcomers is empty."""
    profiles, stopped = [], None
    try:
        with client_for(account, interactive=False) as client:
            for group in campaign.post_groups or ["followers"]:
                cursor = None
                for _ in range(settings.WATCH_MAX_PAGES):
                    page = _list_page(client, campaign, group, cursor)
                    profiles.extend(page.followers)
                    cursor = page.cursor
                    if not (cursor and page.followers) or _knows_some(
                        campaign, account, page.followers
                    ):
                        break
    except PAGE_STOPS as error:
        stopped = error
    return profiles, stopped


def _knows_some(campaign, account, profiles):
    """Whether any of these the campaign met before: skipped for a reason the network
    shows, taken in, blocked, or on the never-block list."""
    dids = [p.did for p in profiles]
    if any(p.did == account.did or p.following or p.blocking_uri or p.muted for p in profiles):
        return True
    return bool(
        taken_in(campaign, dids)
        or held(campaign.user_id, campaign.action, dids)
        or trusted(campaign.user_id, dids)
    )


def _newcomers(campaign, subjects):
    """The counters for newcomers a watch takes in, each paid with a token, and whether
    they were paid: the person's bucket may not pay for them now (a later poll finds them
    again, and the campaign says why it waits)."""
    if not subjects:
        return ({"error": ""} if campaign.error == WATCH_WAITS else {}), True
    if not buckets.take(campaign.user_id, len(subjects)):
        return {"error": WATCH_WAITS}, False
    n = len(subjects)
    changes = {
        "found": F("found") + n,
        "expected": F("expected") + n,
        "tokens_debited": F("tokens_debited") + n,
        "watched": F("watched") + n,
        "error": "",
    }
    return changes, True


def _watch_next(campaign, now, next_at, done_paging):
    """After a watched campaign's pass or poll: poll again, rescan, or stop watching."""
    if now >= campaign.watch_until:
        return {"pages_done": True, "next_page_at": None, "rescanning": False}
    if done_paging:  # a pass ended: watch from now on
        return {
            "cursor": WATCHING,
            "pages_done": False,
            "next_page_at": now + timedelta(seconds=settings.WATCH_POLL_S),
            "watching_since": campaign.watching_since or now,
            "rescanning": False,
            "rescan_at": now + timedelta(seconds=settings.WATCH_RESCAN_S),
        }
    if campaign.rescan_at and now >= campaign.rescan_at:  # read every list whole again
        return {"cursor": "", "rescanning": True, "next_page_at": now}
    return {"next_page_at": next_at}


def taken_in(campaign, dids):
    """The DIDs of these a campaign already took in: from another of a post's lists (a
    person who liked and replied), or on an earlier pass or poll of a watched campaign.
    Waiting in its batches, or blocked by it. Batches are
    read first: a batch becomes records in one commit, so one of the two reads sees it."""
    if not (campaign.post_uri or campaign.watch) or not dids:
        return set()
    waiting = set()
    for batch_dids in Batch.objects.filter(
        owner_id=campaign.user_id, campaign_id=campaign.pk, dids__overlap=list(dids)
    ).values_list("dids", flat=True):
        waiting.update(batch_dids)
    made = ActionRecord.objects.filter(
        owner_id=campaign.user_id, kind=campaign.action, campaign_id=campaign.pk
    ).filter(subject_did__in=list(dids))
    return (waiting | set(made.values_list("subject_did", flat=True))) & set(dids)


def page_room():
    """Batches a person may have waiting before their campaign's next page is read: a page's
    worth (at least one)."""
    return max(1, settings.FOLLOWER_PAGE_SIZE // settings.BLOCK_BATCH_SIZE)


def release_next_page(campaign_id):
    """The campaign's next page at once, if it is due and its person's waiting work is
    under a page: a batch done or a page read releases it, so pages come as the budget
    drains them and not a beat pass later (blocking.upkeep.release_due_pages releases the
    rest, and every page this misses). Claimed by moving next_page_at a lease ahead, as
    beat does, so the two never release one page twice. Returns whether it released."""
    if settings.FOLLOWER_PAGE_RELEASE != "beat":
        return False  # the naive host's countdown task is the only release there
    now = timezone.now()
    with transaction.atomic():
        campaign = one_or_none(
            Campaign.objects.select_for_update(skip_locked=True)
            .filter(
                pk=campaign_id,
                status=Status.RUNNING,
                pages_done=False,
                next_page_at__lte=now,
            )
            .exclude(cursor="", found=0)  # not taken in yet: beat's start_campaign does that
            .only("id", "user_id", "cursor")
        )
        if campaign is None or Batch.objects.filter(owner_id=campaign.user_id).count() >= (
            page_room()
        ):
            return False
        Campaign.objects.filter(pk=campaign_id).update(
            next_page_at=now + timedelta(seconds=settings.ACTION_LEASE_S)
        )
        cursor = campaign.cursor
        transaction.on_commit(lambda: fetch_follower_page.delay(campaign_id, cursor))
    return True


@task("blocking.fetch_follower_page", **DURABLE)
def fetch_follower_page(self, campaign_id, cursor):
    """Read one page of the target's followers (or of a post's engagers) into Batch rows;
    beat releases the next page once this person's waiting work is under a page
    (blocking.upkeep.release_due_pages). `cursor` is the campaign's position: a page
    already taken in is not taken in again."""
    campaign = one_or_none(Campaign.objects.filter(pk=campaign_id))
    if (
        campaign is None
        or campaign.status != Status.RUNNING
        or campaign.pages_done
        or campaign.cursor != cursor
    ):
        return  # cancelled, finished, or this page was already taken in
    account = usable_account(campaign.user_id)
    if account is None:
        return
    # A watch poll, or a watched campaign's rescan, takes in newcomers only: whoever it
    # met before is neither found nor skipped again.
    quiet = cursor == WATCHING or campaign.rescanning
    if cursor == WATCHING:
        (followers, stopped), counts, next_cursor = _read_newest(account, campaign), {}, None
    else:
        followers, counts, next_cursor, stopped = _read_page(account, campaign, cursor)
        if quiet:
            counts = {}
    if isinstance(stopped, CredentialsRevoked):
        return account_refused(account, stopped)
    if isinstance(stopped, NotFound):
        gone = POST_GONE if campaign.post_uri else "The target account no longer exists."
        end(Campaign.objects.filter(pk=campaign_id), Status.FAILED, gone)
        return

    wanted, skips, seen = [], {}, set()
    for profile in followers:
        if profile.did in seen:
            continue
        if campaign.post_uri and profile.did == campaign.target_did:
            continue  # the post's author: taken in by start_campaign if the person chose so
        seen.add(profile.did)
        already = profile.blocking_uri if campaign.action == Action.BLOCK else profile.muted
        if profile.did == account.did:
            skips[profile.did] = SkipReason.YOURSELF
        elif already:
            skips[profile.did] = SkipReason.ALREADY
        elif profile.following:
            skips[profile.did] = SkipReason.FOLLOWING
        else:
            wanted.append(profile)
    now = timezone.now()
    if stopped is None:
        delay = settings.WATCH_POLL_S if cursor == WATCHING else settings.FOLLOWER_PAGE_DELAY_S
        next_at, failures = now + timedelta(seconds=delay), 0
    elif isinstance(stopped, pacing.AddressBudgetSpent):
        next_at, failures = now + timedelta(seconds=stopped.wait_s), campaign.page_failures
    elif isinstance(stopped, RateLimited):
        wait = (stopped.reset_at - now.timestamp()) if stopped.reset_at else backoff_s(1)
        next_at, failures = now + timedelta(seconds=max(1, wait)), campaign.page_failures
    else:
        failures = campaign.page_failures + 1
        next_at = now + timedelta(seconds=backoff_s(failures))
        log.warning("campaign %s: follower page failed (%s): %s", campaign_id, failures, stopped)

    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign_id)
        if locked.cursor != cursor or locked.pages_done or locked.status != Status.RUNNING:
            return  # another run took this page in meanwhile
        # Whoever this campaign took in before (another of a post's lists, an earlier pass)
        # is a repeat, not news: also when the network now shows them muted or blocked by
        # it (a muted account stays listed, marked muted).
        repeats = taken_in(campaign, list(seen))
        wanted = [p for p in wanted if p.did not in repeats]
        skips = {did: reason for did, reason in skips.items() if did not in repeats}
        kept = trusted(campaign.user_id, [p.did for p in wanted])
        skips.update(dict.fromkeys(kept, SkipReason.TRUSTED))
        wanted = [p for p in wanted if p.did not in kept]
        owned = held(campaign.user_id, campaign.action, [p.did for p in wanted])
        ours = [(p.did, p.handle) for p in wanted if p.did not in owned]
        skips.update(dict.fromkeys(owned, SkipReason.ALREADY))
        # Skipped on another of a post's lists already: neither found nor skipped again.
        skipped_before = set(locked.skipped_dids) & set(skips)
        reasons = Counter(r for did, r in skips.items() if did not in skipped_before)
        changes = {}
        if quiet:
            changes, paid = _newcomers(locked, ours)
            ours = ours if paid else []
        new_batches(campaign, ours)
        found_by = merged(locked.found_by, counts)
        done_paging = stopped is None and not next_cursor and cursor != WATCHING
        new_cursor = (next_cursor or "") if followers or stopped is None else cursor
        if cursor == WATCHING:
            new_cursor = WATCHING
        by_countdown = settings.FOLLOWER_PAGE_RELEASE == "countdown" and not done_paging
        if not quiet:
            changes = {
                "found": F("found") + len(seen) - len(repeats) - len(skipped_before),
                "skipped": F("skipped") + sum(reasons.values()),
                "skipped_by": merged(locked.skipped_by, reasons),
            }
            if len(campaign.post_groups) > 1 and len(skips) > len(skipped_before):
                changes["skipped_dids"] = [*locked.skipped_dids, *(set(skips) - skipped_before)]
        changes.update(
            found_by=found_by,
            cursor=new_cursor,
            pages_done=done_paging,
            next_page_at=None if done_paging or by_countdown else next_at,
            page_failures=failures,
        )
        if locked.watch and (done_paging or cursor == WATCHING):
            changes.update(_watch_next(locked, now, next_at, done_paging))
        Campaign.objects.filter(pk=campaign_id).update(**changes)
        transaction.on_commit(lambda: pacing.dispatch(campaign.user_id))
        if by_countdown:
            # The seed's naive release, for the benchmark's naive host only: no due row for
            # beat, a worker holds this task in memory for the whole pause, and the
            # campaign stops if the task is lost.
            countdown = max(1, round((next_at - now).total_seconds()))
            transaction.on_commit(
                lambda: fetch_follower_page.apply_async(
                    (campaign_id, new_cursor), countdown=countdown
                )
            )
    if failures >= settings.MAX_NETWORK_FAILURES:
        failed = POST_PAGE_FAILED if campaign.post_uri else PAGE_FAILED
        end(Campaign.objects.filter(pk=campaign_id), Status.FAILED, failed)
    finish_if_complete(campaign_id)
    # A page that gave the person little to do (all skipped, or the budget spends it at
    # once) is followed by the next without waiting for beat.
    release_next_page(campaign_id)
