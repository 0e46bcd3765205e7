"""What beat runs (queue "maintenance"): it releases work that waits as data.

Every pass is bounded, ordered oldest first, never overlaps its previous run (task_lock),
passes over people whose access is disabled, and returns at once under a kill switch.
"""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from . import pacing
from .batches import revoke_later
from .campaigns import fetch_follower_page, page_room, start_campaign
from .locks import task_lock
from .models import Action, ActionRecord, Batch, Campaign, LinkedAccount
from .taskbase import periodic


def _enabled_users():
    """Users whose account may call the network: a subquery on the account table alone
    (beat's pool may not read auth_user)."""
    return LinkedAccount.objects.filter(api_enabled=True).values("user_id")


def _enabled_owner():
    return Q(owner_id__in=_enabled_users())


@periodic("blocking.release_due_pages")
def release_due_pages(self):
    """Queue the next follower page of each campaign whose person has less than a page of
    work waiting: pages come as fast as the person's write budget drains, no faster."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        now = timezone.now()
        waiting = dict(
            Batch.objects.filter(
                owner_id__in=Campaign.objects.filter(
                    status=Campaign.Status.RUNNING, pages_done=False, next_page_at__lte=now
                ).values("user_id")
            )
            .values_list("owner_id")
            .annotate(n=Count("id"))
        )
        room = page_room()
        # People whose last page has not drained are left out before the pass's limit is
        # taken, so they cannot fill the pass while others' pages wait for a later one.
        full = [user_id for user_id, n in waiting.items() if n >= room]
        due = list(
            Campaign.objects.filter(
                status=Campaign.Status.RUNNING,
                pages_done=False,
                next_page_at__lte=now,
                user_id__in=_enabled_users(),
            )
            .exclude(user_id__in=full)
            .order_by("next_page_at")
            .values_list("pk", "cursor", "found")[:100]
        )
        lease = now + timedelta(seconds=settings.ACTION_LEASE_S)
        released = 0
        for campaign_id, cursor, found in due:
            Campaign.objects.filter(pk=campaign_id).update(next_page_at=lease)
            if not cursor and not found:
                start_campaign.delay(campaign_id)  # its first message was lost
            else:
                fetch_follower_page.delay(campaign_id, cursor)
            released += 1
        return released


@periodic("blocking.release_batches")
def release_batches(self):
    """Send each person's due batches as far as their budget allows (pacing.dispatch)."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        owners = list(
            Batch.objects.filter(
                _enabled_owner(), state=Batch.State.READY, not_before__lte=timezone.now()
            )
            .values_list("owner_id", flat=True)
            .distinct()
            .order_by("owner_id")[: settings.RELEASE_BATCH_LIMIT]
        )
        return sum(pacing.dispatch(owner_id) for owner_id in owners)


@periodic("blocking.release_expired")
def release_expired(self):
    """Turn blocks and mutes whose time is up, then those of people who asked to lift them
    all, into undo batches, a bounded number a pass: the record row goes, the batch row
    keeps what the undo needs. A person whose lifting is over and who asked to unlink is
    unlinked."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        fields = ("pk", "owner_id", "kind", "subject_did", "subject_handle", "rkey")
        limit = settings.RELEASE_BATCH_LIMIT
        with transaction.atomic():
            due = list(
                ActionRecord.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(_enabled_owner(), until__lte=timezone.now())
                .order_by("until")
                .values_list(*fields)[:limit]
            )
            lifting = (
                LinkedAccount.objects.filter(api_enabled=True, lift_all_requested_at__isnull=False)
                .only("id", "user_id", "lift_all_requested_at", "unlink_requested_at")
                .order_by("lift_all_requested_at")
            )
            for account in lifting:
                if len(due) >= limit:
                    break
                # "Unblock everybody" lifts what was held when the person asked (later
                # campaigns' blocks stay); unlinking lifts everything.
                held = ActionRecord.objects.filter(owner_id=account.user_id)
                if not account.unlink_requested_at:
                    held = held.filter(created_at__lte=account.lift_all_requested_at)
                rows = list(
                    held.select_for_update(skip_locked=True)
                    .exclude(pk__in=[row[0] for row in due])
                    .values_list(*fields)[: limit - len(due)]
                )
                due.extend(rows)
                undoing = Batch.objects.filter(
                    owner_id=account.user_id, op__in=[Batch.Op.UNBLOCK, Batch.Op.UNMUTE]
                )
                if not rows and not undoing.exists():
                    _lifted(account)
            due.extend(_campaigns_to_lift(fields, due, limit))
            lift(due)
        return len(due)


def _campaigns_to_lift(fields, due, limit):
    """Rows of the campaigns whose person pressed "Lift these blocks now", up to the pass's
    limit; a campaign with none left is no longer lifting."""
    rows = []
    lifting = Campaign.objects.filter(
        lift_requested_at__isnull=False, user_id__in=_enabled_users()
    ).order_by("lift_requested_at")
    for campaign in lifting.only("id", "user_id"):
        if len(due) + len(rows) >= limit:
            break
        found = list(
            ActionRecord.objects.filter(owner_id=campaign.user_id, campaign_id=campaign.pk)
            .select_for_update(skip_locked=True)
            .exclude(pk__in=[row[0] for row in due])
            .values_list(*fields)[: limit - len(due) - len(rows)]
        )
        if not found:
            Campaign.objects.filter(pk=campaign.pk).update(lift_requested_at=None)
        rows.extend(found)
    return rows


def _lifted(account):
    """Everything this person asked to lift is lifted; an unlink then ends, and its OAuth
    grant is revoked once the deletion is committed."""
    if account.unlink_requested_at:
        grant = (
            LinkedAccount.objects.filter(pk=account.pk)
            .values_list("oauth_grant_encrypted", flat=True)
            .first()
        )
        # Only if the unlink still stands (a sign-in may have ended it meanwhile), and then
        # only its grant is revoked.
        deleted, _ = LinkedAccount.objects.filter(
            pk=account.pk, unlink_requested_at__isnull=False
        ).delete()
        if deleted and grant:
            revoke_later(grant)
    else:
        LinkedAccount.objects.filter(pk=account.pk).update(lift_all_requested_at=None)


def lift(rows, interactive=False):
    """Delete these (pk, owner_id, kind, did, handle, rkey) records and queue their undo."""
    if not rows:
        return
    ActionRecord.objects.filter(pk__in=[row[0] for row in rows]).delete()
    groups = defaultdict(list)
    for _, owner_id, kind, did, handle, rkey in rows:
        groups[(owner_id, kind)].append((did, handle, rkey))
    size = settings.BLOCK_BATCH_SIZE
    now = timezone.now()
    batches = []
    for (owner_id, kind), subjects in groups.items():
        op = Batch.Op.UNBLOCK if kind == Action.BLOCK else Batch.Op.UNMUTE
        for start in range(0, len(subjects), size):
            chunk = subjects[start : start + size]
            batches.append(
                Batch(
                    owner_id=owner_id,
                    op=op,
                    dids=[s[0] for s in chunk],
                    handles=[s[1] for s in chunk],
                    rkeys=[s[2] for s in chunk],
                    interactive=interactive,
                    not_before=now,
                )
            )
    Batch.objects.bulk_create(batches)
    owners = {owner_id for owner_id, _ in groups}
    transaction.on_commit(lambda: [pacing.dispatch(owner_id) for owner_id in sorted(owners)])


def _postgres_started_at():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        return cursor.fetchone()[0]


@periodic("blocking.requeue_stranded")
def requeue_stranded(self):
    """Put back to ready the queued batches whose task vanished (a lost publish, a message
    dropped with its broker), oldest first, counting each time; drop the work of campaigns
    that ended. Disabled accounts' work is left alone: it waits for a new link.

    A batch queued before Postgres last started is put back sooner, STRANDED_AFTER_RESTART_S
    after the start: with synchronous_commit off a crash can undo the commit that finished
    it (the row is back, queued, its message long gone), and whether its message is still
    coming cannot be known. If it is, the batch simply runs twice: its record keys make the
    second run write nothing new."""
    with task_lock(self.name, ttl_seconds=self.time_limit) as acquired:
        if not acquired:
            return 0
        ended = Campaign.objects.exclude(status=Campaign.Status.RUNNING).values("pk")
        Batch.objects.filter(campaign_id__in=ended).delete()
        now = timezone.now()
        old = now - timedelta(seconds=settings.STRANDED_AFTER_S)
        started = _postgres_started_at()
        if now - started >= timedelta(seconds=settings.STRANDED_AFTER_RESTART_S):
            old = max(old, started)
        stranded = list(
            Batch.objects.filter(_enabled_owner(), state=Batch.State.QUEUED, queued_at__lt=old)
            .order_by("queued_at")
            .values_list("pk", flat=True)[: settings.RELEASE_BATCH_LIMIT]
        )
        Batch.objects.filter(pk__in=stranded, state=Batch.State.QUEUED).update(
            state=Batch.State.READY, queued_at=None, requeued=F("requeued") + 1
        )
        return len(stranded)
