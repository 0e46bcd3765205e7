"""The block service's tasks. Every task takes primary keys and JSON, has a name,
a time limit, and a route in settings.CELERY_TASK_ROUTES (docs/queues.md).

Long waits are data, not countdowns: a campaign's next page is due at
Campaign.next_page_at, a block ends at ActionRecord.until, and periodic tasks
release both. No countdown exceeds settings.MAX_COUNTDOWN_S.
"""

import logging
import random
import time
from collections import defaultdict
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from bluesky.errors import BadRequest, CredentialsRevoked, NotFound, ProviderError, RateLimited
from celery import Task, shared_task
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .locks import task_lock
from .models import Action, ActionRecord, Campaign, KillSwitch, LinkedAccount, Scope
from .network import client_for

log = logging.getLogger(__name__)
State = ActionRecord.State


class GuardedTask(Task):
    """Checks the kill switch before any work, and logs how long each run took."""

    def __call__(self, *args, **kwargs):
        if KillSwitch.objects.filter(task_name=self.name, engaged=True).exists():
            log.warning(
                "%s: kill switch engaged; retrying in %ss", self.name, settings.KILL_SWITCH_RETRY_S
            )
            raise self.retry(countdown=settings.KILL_SWITCH_RETRY_S, max_retries=None)
        started = time.monotonic()
        try:
            return super().__call__(*args, **kwargs)
        finally:
            log.info("%s took %.3fs", self.name, time.monotonic() - started)


def task(name, **options):
    options.setdefault("time_limit", settings.CELERY_TASK_TIME_LIMIT)
    options.setdefault("soft_time_limit", settings.CELERY_TASK_SOFT_TIME_LIMIT)
    # Waiting for a rate limit or a kill switch may take many retries; retries
    # for network errors set their own limit (see _network_failed).
    options.setdefault("max_retries", None)
    return shared_task(name=name, base=GuardedTask, bind=True, **options)


# Work that must survive a worker dying mid-task: acknowledged only when done,
# and re-queued if the worker process is killed.
DURABLE = {"acks_late": True, "reject_on_worker_lost": True}


def backoff(task_self, reset_at=None):
    """Seconds to wait: until the network's reset if it said, else exponential with jitter."""
    if reset_at:
        wait = reset_at - time.time() + random.uniform(0, 3)  # noqa: S311
    else:
        wait = settings.RETRY_BASE_S * 2**task_self.request.retries * random.uniform(0.5, 1.5)  # noqa: S311
    return max(1, min(int(wait), settings.MAX_COUNTDOWN_S))


def _wait_for_rate_limit(task_self, account):
    if account.is_rate_limited():
        remaining = (account.rate_limited_until - timezone.now()).total_seconds()
        raise task_self.retry(
            countdown=max(1, min(int(remaining) + 1, settings.MAX_COUNTDOWN_S)), max_retries=None
        )


def _network_failed(task_self, account, error):
    """Turn a provider error into the right outcome: wait, retry, or stop for good."""
    if isinstance(error, RateLimited):
        wait = backoff(task_self, error.reset_at)
        if error.scope == "account":
            # This person's own budget is spent: every task of theirs waits for the reset.
            until = (
                datetime.fromtimestamp(error.reset_at, tz=UTC)
                if error.reset_at
                else timezone.now() + timedelta(seconds=wait)
            )
            LinkedAccount.objects.filter(pk=account.pk).update(rate_limited_until=until)
        # A per-address limit is every account's on this host: this task waits for the
        # reset it was told, and the person's account is not marked as limited.
        raise task_self.retry(countdown=wait, max_retries=None)
    if isinstance(error, CredentialsRevoked):
        LinkedAccount.objects.filter(pk=account.pk).update(
            api_enabled=False,
            disabled_reason=error.reason,
            access_jwt_encrypted="",
            refresh_jwt_encrypted="",
        )
        Campaign.objects.filter(user_id=account.user_id, status=Campaign.Status.RUNNING).update(
            status=Campaign.Status.FAILED, error=error.reason
        )
        log.warning("account %s: %s; API access disabled", account.pk, error.__class__.__name__)
        return
    if isinstance(error, ProviderError):
        raise task_self.retry(countdown=backoff(task_self), max_retries=8, exc=error)
    raise error


def _finish_if_complete(campaign_id):
    Campaign.objects.filter(
        pk=campaign_id,
        status=Campaign.Status.RUNNING,
        pages_done=True,
        found__lte=F("acted") + F("skipped") + F("failed"),
    ).update(status=Campaign.Status.DONE, next_page_at=None)


def _usable_account(campaign):
    account = LinkedAccount.objects.filter(user_id=campaign.user_id).first()
    if account is None or not account.api_enabled:
        return None
    return account


def _queue_batches(campaign_id, dids):
    size = settings.BLOCK_BATCH_SIZE
    for start in range(0, len(dids), size):
        act_on_batch.delay(campaign_id, dids[start : start + size])


def _take_in(campaign, subjects):
    """Insert a pending row per (did, handle); return the DIDs this campaign now holds.

    A conflict on the unique constraint means the person already holds that
    block or mute (from another campaign): that subject is not this campaign's.
    """
    ActionRecord.objects.bulk_create(
        [
            ActionRecord(
                owner_id=campaign.user_id,
                campaign_id=campaign.pk,
                kind=campaign.action,
                subject_did=did,
                subject_handle=handle,
                until=campaign.until,
            )
            for did, handle in subjects
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    return list(
        ActionRecord.objects.filter(
            owner_id=campaign.user_id,
            kind=campaign.action,
            subject_did__in=[did for did, _ in subjects],
            campaign_id=campaign.pk,
            state=State.PENDING,
        ).values_list("subject_did", flat=True)
    )


@task("blocking.start_campaign")
def start_campaign(self, campaign_id):
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.status != Campaign.Status.RUNNING:
        return
    if campaign.scope in (Scope.ACCOUNT, Scope.BOTH):
        ours = bool(_take_in(campaign, [(campaign.target_did, campaign.target_handle)]))
        Campaign.objects.filter(pk=campaign_id).update(
            found=F("found") + 1, skipped=F("skipped") + (0 if ours else 1)
        )
        if ours:
            # The one account a person is waiting on goes first, on this queue.
            act_on_batch.apply_async((campaign_id, [campaign.target_did]), queue="interactive")
    if campaign.scope == Scope.ACCOUNT:
        Campaign.objects.filter(pk=campaign_id).update(pages_done=True)
        _finish_if_complete(campaign_id)
    else:
        lease = timezone.now() + timedelta(seconds=settings.ACTION_LEASE_S)
        Campaign.objects.filter(pk=campaign_id).update(next_page_at=lease)
        fetch_follower_page.delay(campaign_id, "")


@task("blocking.fetch_follower_page", **DURABLE)
def fetch_follower_page(self, campaign_id, cursor):
    """Fetch one page of the target's followers, queue its batches, schedule the next page."""
    campaign = Campaign.objects.get(pk=campaign_id)
    if (
        campaign.status != Campaign.Status.RUNNING
        or campaign.pages_done
        or campaign.cursor != cursor
    ):
        return  # cancelled, finished, or this page was already taken in
    account = _usable_account(campaign)
    if account is None:
        return
    _wait_for_rate_limit(self, account)
    followers, next_cursor = [], cursor or None
    try:
        with client_for(account) as client:
            while len(followers) < settings.FOLLOWER_PAGE_SIZE:
                page = client.followers_page(campaign.target_did, next_cursor, limit=100)
                followers.extend(page.followers)
                next_cursor = page.cursor
                if not next_cursor:
                    break
    except (RateLimited, ProviderError, CredentialsRevoked) as error:
        return _network_failed(self, account, error)
    except NotFound:
        Campaign.objects.filter(pk=campaign_id).update(
            status=Campaign.Status.FAILED, error="The target account no longer exists."
        )
        return

    wanted, skipped = [], 0
    seen = set()
    for profile in followers:
        if profile.did in seen:
            continue
        seen.add(profile.did)
        already = profile.blocking_uri if campaign.action == Action.BLOCK else profile.muted
        if profile.did == account.did or already or profile.following:
            skipped += 1
        else:
            wanted.append(profile)

    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign_id)
        if locked.cursor != cursor or locked.pages_done:
            return  # another run took this page in meanwhile
        ours = _take_in(campaign, [(p.did, p.handle) for p in wanted])
        # Accounts this person already holds a block of (another campaign) count as skipped.
        skipped += len(wanted) - len(ours)
        done_paging = not next_cursor
        Campaign.objects.filter(pk=campaign_id).update(
            found=F("found") + len(seen),
            skipped=F("skipped") + skipped,
            cursor=next_cursor or "",
            pages_done=done_paging,
            next_page_at=None
            if done_paging
            else timezone.now() + timedelta(seconds=settings.FOLLOWER_PAGE_DELAY_S),
        )
        transaction.on_commit(lambda: _queue_batches(campaign_id, ours))
    _finish_if_complete(campaign_id)


_CLAIM_SQL = """
WITH claimable AS (
    SELECT id, attempted_at FROM blocking_actionrecord
    WHERE owner_id = %(owner)s AND kind = %(kind)s AND subject_did = ANY(%(dids)s)
      AND state = 'pending' AND (attempted_at IS NULL OR attempted_at < %(lease_start)s)
    FOR UPDATE SKIP LOCKED
)
UPDATE blocking_actionrecord a SET attempted_at = %(now)s
FROM claimable c WHERE a.id = c.id
RETURNING a.id, a.subject_did, c.attempted_at
"""


def _claim(owner_id, kind, dids):
    """Take the pending rows for these DIDs for one lease; returns [(id, did, tried_before)]."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "owner": owner_id,
                "kind": kind,
                "dids": list(dids),
                "now": now,
                "lease_start": now - timedelta(seconds=settings.ACTION_LEASE_S),
            },
        )
        return [(row_id, did, previous is not None) for row_id, did, previous in cursor.fetchall()]


def _release_claim(row_ids):
    """Let a retry claim these rows again at once; they stay marked as maybe written."""
    expired = timezone.now() - timedelta(seconds=settings.ACTION_LEASE_S + 1)
    ActionRecord.objects.filter(pk__in=row_ids, state=State.PENDING).update(attempted_at=expired)


@task("blocking.act_on_batch", **DURABLE)
def act_on_batch(self, campaign_id, dids):
    """Block (or mute) one batch of a campaign's accounts in as few calls as the network allows."""
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.status == Campaign.Status.CANCELLED:
        ActionRecord.objects.filter(
            owner_id=campaign.user_id,
            kind=campaign.action,
            subject_did__in=dids,
            state=State.PENDING,
        ).delete()
        return
    account = _usable_account(campaign)
    if account is None:
        return
    _wait_for_rate_limit(self, account)
    claimed = _claim(campaign.user_id, campaign.action, dids)
    if not claimed:
        held = ActionRecord.objects.filter(
            owner_id=campaign.user_id,
            kind=campaign.action,
            subject_did__in=dids,
            state=State.PENDING,
        ).exists()
        if held:  # another run holds them, or one that died does until its lease ends
            raise self.retry(
                countdown=min(settings.ACTION_LEASE_S, settings.MAX_COUNTDOWN_S), max_retries=None
            )
        return
    ids = {did: row_id for row_id, did, _ in claimed}
    retried = [did for _, did, tried in claimed if tried]
    done, failed = {}, []
    try:
        with client_for(account) as client:
            if retried:
                # A run before this one may have written these: ask the network.
                for profile in client.profiles(retried):
                    if campaign.action == Action.BLOCK and profile.blocking_uri:
                        done[profile.did] = profile.blocking_uri.rsplit("/", 1)[-1]
                    elif campaign.action == Action.MUTE and profile.muted:
                        done[profile.did] = ""
            todo = [did for did in ids if did not in done]
            if campaign.action == Action.BLOCK:
                done.update(client.block_many(todo))
            else:
                for did in todo:
                    try:
                        client.mute(did)
                        done[did] = ""
                    except (NotFound, BadRequest):
                        failed.append(did)
    except (RateLimited, ProviderError, CredentialsRevoked) as error:
        _save_progress(campaign_id, ids, done, failed)
        _release_claim([row_id for did, row_id in ids.items() if did not in done])
        return _network_failed(self, account, error)
    except (NotFound, BadRequest) as error:
        log.warning("campaign %s: batch refused: %s", campaign_id, error)
        failed = [did for did in ids if did not in done]
    _save_progress(campaign_id, ids, done, failed)
    _finish_if_complete(campaign_id)


def _save_progress(campaign_id, ids, done, failed):
    with transaction.atomic():
        rows = list(ActionRecord.objects.filter(pk__in=[ids[did] for did in done]))
        for row in rows:
            row.state = State.DONE
            row.rkey = done[row.subject_did]
        ActionRecord.objects.bulk_update(rows, ["state", "rkey"])
        ActionRecord.objects.filter(pk__in=[ids[did] for did in failed]).update(state=State.FAILED)
        Campaign.objects.filter(pk=campaign_id).update(
            acted=F("acted") + len(rows), failed=F("failed") + len(failed)
        )
    done.clear()  # saved: a later save in the same run must not count them twice
    failed.clear()


def _undo(task_self, owner_id, kind, row_ids):
    rows = list(
        ActionRecord.objects.filter(
            pk__in=row_ids, owner_id=owner_id, kind=kind, state=State.RELEASING
        )
    )
    if not rows:
        return
    account = LinkedAccount.objects.filter(user_id=owner_id).first()
    if account is None or not account.api_enabled:
        return  # nothing can be undone without access; rows wait for a new link
    _wait_for_rate_limit(task_self, account)
    try:
        with client_for(account) as client:
            if kind == Action.BLOCK:
                client.unblock_many([row.rkey for row in rows if row.rkey])
            else:
                for row in rows:
                    with suppress(NotFound):  # the account is gone; so is the mute
                        client.unmute(row.subject_did)
    except (RateLimited, ProviderError, CredentialsRevoked) as error:
        return _network_failed(task_self, account, error)
    ActionRecord.objects.filter(pk__in=[row.pk for row in rows]).delete()


@task("blocking.undo_batch", **DURABLE)
def undo_batch(self, owner_id, kind, row_ids):
    """Unblock (or unmute) a batch whose time is up. Deleting a missing block is harmless."""
    _undo(self, owner_id, kind, row_ids)


@task("blocking.undo_one", **DURABLE)
def undo_one(self, owner_id, kind, row_id):
    """A person's own "unblock this one": on the interactive queue."""
    _undo(self, owner_id, kind, [row_id])


def _periodic(name):
    # A run that dies holds its lock until this limit passes, then the next run goes.
    limit = max(10, int(settings.PERIODIC_INTERVAL_S * 4))
    return task(name, time_limit=limit, soft_time_limit=limit - 5)


@_periodic("blocking.release_due_pages")
def release_due_pages(self):
    """Queue the next follower page of every campaign whose pause is over."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        now = timezone.now()
        due = list(
            Campaign.objects.filter(
                status=Campaign.Status.RUNNING, pages_done=False, next_page_at__lte=now
            ).values_list("pk", "cursor")[:100]
        )
        lease = now + timedelta(seconds=settings.ACTION_LEASE_S)
        for campaign_id, cursor in due:
            Campaign.objects.filter(pk=campaign_id).update(next_page_at=lease)
            fetch_follower_page.delay(campaign_id, cursor)
        return len(due)


@_periodic("blocking.release_expired")
def release_expired(self):
    """Undo blocks and mutes whose time is up, a bounded batch per pass."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        with transaction.atomic():
            due = list(
                ActionRecord.objects.select_for_update(skip_locked=True)
                .filter(state=State.DONE, until__lte=timezone.now())
                .order_by("until")
                .values_list("pk", "owner_id", "kind")[: settings.RELEASE_BATCH_LIMIT]
            )
            ActionRecord.objects.filter(pk__in=[pk for pk, _, _ in due]).update(
                state=State.RELEASING, attempted_at=timezone.now()
            )
            groups = defaultdict(list)
            for pk, owner_id, kind in due:
                groups[(owner_id, kind)].append(pk)
            transaction.on_commit(lambda: _queue_undo(groups))
        return len(due)


def _queue_undo(groups):
    size = settings.BLOCK_BATCH_SIZE
    for (owner_id, kind), ids in groups.items():
        for start in range(0, len(ids), size):
            undo_batch.delay(owner_id, kind, ids[start : start + size])


@_periodic("blocking.requeue_stranded")
def requeue_stranded(self):
    """Queue again work whose task was lost (a crash between commit and publish)."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        now = timezone.now()
        old = now - timedelta(seconds=settings.STRANDED_AFTER_S)
        lease_start = now - timedelta(seconds=settings.ACTION_LEASE_S)
        stranded = list(
            ActionRecord.objects.filter(
                Q(state=State.PENDING, created_at__lt=old)
                & (Q(attempted_at__isnull=True) | Q(attempted_at__lt=lease_start))
                | Q(state=State.RELEASING, attempted_at__lt=old)
            ).values_list("pk", "campaign_id", "subject_did", "owner_id", "kind", "state")[
                : settings.RELEASE_BATCH_LIMIT
            ]
        )
        pending, releasing = defaultdict(list), defaultdict(list)
        for pk, campaign_id, did, owner_id, kind, state in stranded:
            if state == State.PENDING and campaign_id:
                pending[campaign_id].append(did)
            elif state == State.RELEASING:
                releasing[(owner_id, kind)].append(pk)
        ActionRecord.objects.filter(
            pk__in=[r[0] for r in stranded if r[5] == State.RELEASING]
        ).update(attempted_at=now)
        for campaign_id, dids in pending.items():
            _queue_batches(campaign_id, dids)
        _queue_undo(releasing)
        return len(stranded)
