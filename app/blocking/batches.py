"""The network writes: block or mute a batch of accounts, or lift them.

A task gets a Batch id. It does the batch's work in as few calls as the network allows and
saves the result in one transaction: the batch row deleted, one ActionRecord inserted per
block made, the campaign's counters moved. Whatever stops it hands the row back to beat
(blocking.pacing.hand_back) with the reason's own wait: the budget's reset, a back-off
after a network error (counted), or at once.

Blocks are idempotent against the PDS itself: each record's key was made with the batch,
so a retry after a lost answer, a 5xx or a killed worker writes the same records again and
the client looks up on the PDS what already exists (bluesky.client.block_many).
"""

import logging
from contextlib import suppress
from datetime import UTC, datetime

from bluesky.errors import (
    BadRequest,
    CredentialsRevoked,
    NotFound,
    ProviderError,
    RateLimited,
    RkeyTaken,
)
from bluesky.tids import next_tids
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.task_metrics import count_actions

from . import crypto, pacing
from .campaigns import (
    account_refused,
    backoff_s,
    count_skips,
    finish_if_complete,
    held,
    release_next_page,
    trusted,
    usable_account,
)
from .models import (
    Action,
    ActionRecord,
    Batch,
    Campaign,
    LinkedAccount,
    SkipReason,
    one_or_none,
)
from .network import client_for, revoke_grant
from .taskbase import DURABLE, GuardedTask, task

log = logging.getLogger(__name__)
Op = Batch.Op
KIND_OF_OP = {Op.BLOCK: Action.BLOCK, Op.MUTE: Action.MUTE}
GAVE_UP = "Bluesky kept failing for some accounts ({count:,}); they were not blocked."
REFUSED = "Bluesky refused to block some accounts (counted as failed): {error}"


class BatchTask(GuardedTask):
    def on_kill_switch(self, batch_id):
        pacing.hand_back(batch_id, settings.KILL_SWITCH_RETRY_S)

    def work_of(self, batch_id):
        return f" batch {batch_id}"

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """An error no handler caught ended the task (a bug, a refusal nobody expected, the
        soft time limit). Its message is acknowledged all the same (acks_late acks a
        failure), so a row still queued would wait, without a message, for the stranded
        sweep: it goes back to beat as after a network error instead, counted and with
        back-off, and a block batch gives up after MAX_NETWORK_FAILURES. A row a handler
        already moved (handed back, done) is left as it is."""
        batch_id = args[0] if args else kwargs.get("batch_id")
        try:
            batch = _claimed(batch_id)
            if batch is not None:
                log.warning("batch %s: %s: %s; handed back", batch_id, type(exc).__name__, exc)
                _waited(batch, None, ProviderError(f"{type(exc).__name__}: {exc}"))
        except Exception:
            log.exception("batch %s: could not hand it back; the stranded sweep will", batch_id)


def _companion(batch, action):
    """A mute batch of a block campaign: the mutes of a block-and-mute campaign."""
    return batch.op == Op.MUTE and action == Action.BLOCK


def _claimed(batch_id):
    """The batch if it is still this task's to do (queued), else None."""
    return one_or_none(Batch.objects.filter(pk=batch_id, state=Batch.State.QUEUED))


def _waited(batch, account, error):
    """Hand a batch back after a wait or a network error; True if the error was handled."""
    if isinstance(error, pacing.AddressBudgetSpent):
        pacing.hand_back(batch.pk, error.wait_s)
    elif isinstance(error, RateLimited):
        now = timezone.now().timestamp()
        wait = max(1.0, error.reset_at - now) if error.reset_at else backoff_s(1)
        if error.scope == "account":
            # This person's own budget is spent: none of their work goes until the reset.
            LinkedAccount.objects.filter(pk=account.pk).update(
                rate_limited_until=datetime.fromtimestamp(now + wait, tz=UTC),
                write_points_left=0,
            )
            if error.limit and batch.op in (Op.BLOCK, Op.UNBLOCK):
                # A window smaller than the batch would refuse it for ever: cut it to fit.
                pacing.cut_to_fit(batch, error.limit, smallest=1)
        pacing.hand_back(batch.pk, wait)
    elif isinstance(error, CredentialsRevoked):
        account_refused(account, error)
        pacing.hand_back(batch.pk)  # an undo waits for a new link; a block's campaign ended
    elif isinstance(error, RkeyTaken):
        # Another record holds a key made for this batch: new keys, then again at once.
        Batch.objects.filter(pk=batch.pk).update(rkeys=next_tids(len(batch.dids)))
        pacing.hand_back(batch.pk)
    elif isinstance(error, ProviderError):
        if batch.failures + 1 >= settings.MAX_NETWORK_FAILURES and batch.op in KIND_OF_OP:
            log.warning(
                "batch %s: giving up after %s network errors: %s",
                batch.pk,
                batch.failures + 1,
                error,
            )
            _save(batch, {}, list(batch.dids), gave_up=True)
            return True
        log.info("batch %s: %s; trying again later", batch.pk, error)
        pacing.hand_back(batch.pk, backoff_s(batch.failures + 1), failed=True)
    else:
        return False
    return True


@task("blocking.act_on_batch", base=BatchTask, **DURABLE)
def act_on_batch(self, batch_id):
    """Block (or mute) one batch of a campaign's accounts."""
    batch = _claimed(batch_id)
    if batch is None:
        return  # done by an earlier delivery, handed back, or its campaign ended
    campaign = one_or_none(Campaign.objects.filter(pk=batch.campaign_id))
    # A block-and-mute campaign is done when its blocks are: its mutes still go.
    going = [Campaign.Status.RUNNING]
    if campaign is not None and _companion(batch, campaign.action):
        going.append(Campaign.Status.DONE)
    if campaign is None or campaign.status not in going:
        Batch.objects.filter(pk=batch.pk).delete()
        return
    account = usable_account(batch.owner_id)
    if account is None:
        pacing.hand_back(batch.pk)  # waits for the person to link again
        return
    kind = KIND_OF_OP[batch.op]
    owned = held(batch.owner_id, kind, batch.dids)
    # Put on the never-block list since the page was taken in: still never touched.
    kept = trusted(batch.owner_id, set(batch.dids) - owned)
    todo = [
        (did, rkey)
        for did, rkey in zip(batch.dids, batch.rkeys, strict=True)
        if did not in owned and did not in kept
    ]
    done, failed, reason = {}, [], ""
    try:
        with client_for(account, interactive=batch.interactive) as client:
            if batch.op == Op.BLOCK:
                refused, refusal = _by_halves(
                    lambda part: done.update(
                        client.block_many([did for did, _ in part], [rkey for _, rkey in part])
                    ),
                    todo,
                )
                failed.extend(did for did, _ in refused)
                if refusal:
                    log.warning("batch %s: %s refused (%s)", batch.pk, len(failed), refusal)
                    reason = REFUSED.format(error=refusal[:200])
                pacing.remember_write_budget(account, client.rate_limit)
            else:
                for did, _ in todo:
                    try:
                        client.mute(did)
                        done[did] = ""
                    except (NotFound, BadRequest):
                        failed.append(did)
    except (RateLimited, ProviderError, CredentialsRevoked, pacing.AddressBudgetSpent) as error:
        if done or failed:
            _save(batch, done, failed, keep_rest=True)
            batch = _claimed(batch_id) or batch
        _waited(batch, account, error)
        return
    skips = {SkipReason.ALREADY: len(owned), SkipReason.TRUSTED: len(kept)}
    _save(batch, done, failed, skips=skips, reason=reason)
    pacing.dispatch(batch.owner_id)
    release_next_page(batch.campaign_id)


def _by_halves(write, items):
    """write(items), and when the network refuses the whole call, again in halves until the
    refused items stand alone: one invalid record fails a whole call, and one among 200 then
    costs about 16 calls, not 200. A call refused as not found is the whole account's (no
    repo), not an item's: all of it is refused. Returns the refused items and the last
    refusal's text ("" if none)."""
    try:
        write(items)
        return [], ""
    except (BadRequest, NotFound) as refusal:
        if len(items) == 1 or isinstance(refusal, NotFound):
            return list(items), str(refusal)
    half = len(items) // 2
    first, first_text = _by_halves(write, items[:half])
    second, second_text = _by_halves(write, items[half:])
    return first + second, second_text or first_text


_INSERT_SQL = """
INSERT INTO blocking_actionrecord
    (owner_id, campaign_id, kind, subject_did, subject_handle, rkey, until, created_at)
SELECT %(owner)s, %(campaign)s, %(kind)s, d, h, r, %(until)s, %(now)s
FROM unnest(%(dids)s::varchar[], %(handles)s::varchar[], %(rkeys)s::varchar[]) AS t(d, h, r)
ON CONFLICT (owner_id, subject_did, kind) DO NOTHING
RETURNING subject_did
"""


def _save(batch, done, failed, skips=None, keep_rest=False, gave_up=False, reason=""):
    """One transaction: the batch row gone (or shrunk to what is left), a record per block
    made, the campaign's counters moved.

    Blocks the network made are always recorded, also when the batch row went meanwhile
    (its campaign was cancelled mid-call): a block is never left on the network unknown.
    A record is unique per person and account, so a second delivery of a batch records
    nothing twice, and only the run that removes the batch row counts skips and failures.
    A conflict with a record of another key means the person came to hold that block
    through another campaign meanwhile: this second record is lifted again.
    The mutes of a block-and-mute campaign move only its `muted` count: its blocks count
    what was found, skipped and failed.
    """
    handles = dict(zip(batch.dids, batch.handles, strict=True))
    skips = skips or {}
    rest = [i for i, did in enumerate(batch.dids) if did not in done and did not in failed]
    kind = KIND_OF_OP[batch.op]
    with transaction.atomic():
        # The campaign's row first, then the batch's: the order in which ending a campaign
        # (campaigns.end: the person's Cancel) takes them. The other way round, a batch saved
        # while its campaign was being cancelled deadlocked with it, and Postgres aborted one
        # of the two (the person's Cancel answered 500).
        campaign = Campaign.objects.select_for_update().filter(pk=batch.campaign_id)
        campaign = one_or_none(campaign.values("until", "action")) or {}
        if keep_rest and rest:
            changed = Batch.objects.filter(pk=batch.pk, state=Batch.State.QUEUED).update(
                dids=[batch.dids[i] for i in rest],
                handles=[batch.handles[i] for i in rest],
                rkeys=[batch.rkeys[i] for i in rest],
            )
        else:
            changed = Batch.objects.filter(pk=batch.pk).delete()[0]
        inserted = set()
        companion = _companion(batch, campaign.get("action"))
        if done:
            with connection.cursor() as cursor:
                cursor.execute(
                    _INSERT_SQL,
                    {
                        "owner": batch.owner_id,
                        "campaign": batch.campaign_id,
                        "kind": kind,
                        "dids": list(done),
                        "handles": [handles[did] for did in done],
                        "rkeys": list(done.values()),
                        "until": campaign.get("until"),
                        "now": timezone.now(),
                    },
                )
                inserted = {row[0] for row in cursor.fetchall()}
            transaction.on_commit(lambda: count_actions(batch.op, len(inserted)))
        conflicted = [did for did in done if did not in inserted]
        held_keys = dict(
            ActionRecord.objects.filter(
                owner_id=batch.owner_id, kind=kind, subject_did__in=conflicted
            ).values_list("subject_did", "rkey")
        )
        doubles = [did for did in conflicted if done[did] and held_keys.get(did) != done[did]]
        if companion:
            if inserted:
                Campaign.objects.filter(pk=batch.campaign_id).update(
                    muted=F("muted") + len(inserted)
                )
            return
        changes = {"acted": F("acted") + len(inserted)}
        if changed:
            changes["skipped"] = F("skipped") + sum(skips.values()) + len(doubles)
            changes["failed"] = F("failed") + len(failed)
            if gave_up:
                changes["error"] = GAVE_UP.format(count=len(failed))
            elif reason:
                changes["error"] = reason
        if inserted or changed:
            Campaign.objects.filter(pk=batch.campaign_id).update(**changes)
        if changed:
            count_skips(
                batch.campaign_id,
                {**skips, SkipReason.ALREADY: skips.get(SkipReason.ALREADY, 0) + len(doubles)},
            )
        if doubles:
            Batch.objects.create(
                owner_id=batch.owner_id,
                op=Op.UNBLOCK,
                dids=doubles,
                handles=[handles[did] for did in doubles],
                rkeys=[done[did] for did in doubles],
                not_before=timezone.now(),
            )
    finish_if_complete(batch.campaign_id)


@task("blocking.undo_batch", base=BatchTask, **DURABLE)
def undo_batch(self, batch_id):
    """Lift blocks (or mutes) whose time is up or that their person undid. Deleting a
    record that is already gone (unblocked by hand in the Bluesky app) is harmless."""
    batch = _claimed(batch_id)
    if batch is None:
        return
    account = usable_account(batch.owner_id)
    if account is None:
        pacing.hand_back(batch.pk)  # nothing can be undone without access: waits for a link
        return
    try:
        with client_for(account, interactive=batch.interactive) as client:
            if batch.op == Op.UNBLOCK:
                rkeys = [rkey for rkey in batch.rkeys if rkey]
                # A refusal is terminal (an invalid key, a repo the PDS does not know):
                # trying again cannot help, so the row is not tried for ever.
                refused, _ = _by_halves(client.unblock_many, rkeys) if rkeys else ([], "")
                if refused:
                    log.warning(
                        "batch %s: Bluesky refused to delete %s block records (%s); given up",
                        batch.pk,
                        len(refused),
                        ", ".join(refused),
                    )
                pacing.remember_write_budget(account, client.rate_limit)
            else:
                for did in batch.dids:
                    # The account is gone, so is the mute; a refusal is terminal.
                    with suppress(NotFound, BadRequest):
                        client.unmute(did)
    except (RateLimited, ProviderError, CredentialsRevoked, pacing.AddressBudgetSpent) as error:
        # An undo never gives up: after network errors it waits longer, up to MAX_BACKOFF_S.
        _waited(batch, account, error)
        return
    Batch.objects.filter(pk=batch.pk).delete()
    count_actions(batch.op, len(batch.dids))
    pacing.dispatch(batch.owner_id)


@task("blocking.revoke_grant", **DURABLE)
def revoke_unlinked_grant(self, encrypted_grant):
    """End an OAuth grant nobody uses any more at its authorization server, best effort (a
    failure is logged; the grant then lives until it expires). It travels encrypted: the
    maintenance pool, which sends it when a lift-then-unlink ends, has no key to use it."""
    revoke_grant(crypto.decrypt(encrypted_grant))


def revoke_later(encrypted_grant):
    """Revoke this (encrypted) grant on a network pool once the transaction commits, away
    from the request or periodic task that let it go."""
    transaction.on_commit(lambda: revoke_unlinked_grant.delay(encrypted_grant))
