"""Pace the work by the network's budgets, not by the clock.

Two budgets bound what may be sent:

- each account's write points (5,000 an hour and 35,000 a day on Bluesky; a block costs
  3, an unblock 1). The network reports what is left with every write (ratelimit-remaining
  and -reset of its tightest limit); `dispatch` sends a person's next batches only while
  that, less what their tasks in flight will spend, covers them, and only
  MAX_IN_FLIGHT_PER_ACCOUNT at a time. The rest wait as Batch rows that beat releases
  (`blocking.release_batches`), never as tasks retrying with a countdown.
- the address the requests leave from (3,000 requests per 5 minutes for all accounts
  together): a token bucket in Postgres, one row per egress address (EGRESS_ADDRESS), that
  every worker process behind that address takes from before each request
  (`take_address_budget`). Its size and refill keep any window of that length under
  ADDRESS_BUDGET_SHARE of the limit, and bulk work always leaves INTERACTIVE_RESERVE
  requests for a person waiting on one block. A worker host with an address of its own has
  a bucket of its own; an account's write points are the account's, whichever host sends.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import botocore.exceptions
import kombu.exceptions
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from config.celery_app import app as celery_app

from .models import Batch, KillSwitch, LinkedAccount, one_or_none
from .taskbase import INFRA_ERRORS

log = logging.getLogger(__name__)

PACING_FIELDS = (
    "id",
    "user_id",
    "api_enabled",
    "rate_limited_until",
    "write_points_left",
    "write_window_reset_at",
)
# What publishing a task raises when the broker cannot take it: kombu's connection error
# after Celery's publish retries (Redis), a socket error, or boto's (SQS).
BROKER_ERRORS = (
    kombu.exceptions.OperationalError,
    OSError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
)
TASK_OF_OP = {
    Batch.Op.BLOCK: "blocking.act_on_batch",
    Batch.Op.MUTE: "blocking.act_on_batch",
    Batch.Op.UNBLOCK: "blocking.undo_batch",
    Batch.Op.UNMUTE: "blocking.undo_batch",
}


class AddressBudgetSpent(Exception):
    """The shared budget of this host's egress address has no request to spare for a while."""

    def __init__(self, wait_s):
        super().__init__(f"the shared per-address budget is spent for {wait_s:.0f}s")
        self.wait_s = wait_s


def address_bucket():
    """(capacity, refill per second): any window of BLUESKY_ADDRESS_WINDOW_S sees at most
    capacity + refill x window requests, which is the share of the limit we allow."""
    allowed = settings.BLUESKY_ADDRESS_REQUESTS_PER_WINDOW * settings.ADDRESS_BUDGET_SHARE
    # A small burst and a fast refill: a capacity of a tenth of the window's share held
    # the sustained rate to 90% of the share; a thirtieth holds it at 97%.
    capacity = max(settings.INTERACTIVE_RESERVE + 10, allowed / 30)
    rate = max(0.0, allowed - capacity) / settings.BLUESKY_ADDRESS_WINDOW_S
    return capacity, rate


_REFILLED = (
    "LEAST(capacity, tokens + refill_per_s"
    " * GREATEST(0, EXTRACT(EPOCH FROM (clock_timestamp() - refilled_at))))"
)
_TAKE_SQL = (
    f"UPDATE blocking_addressbudget SET tokens = {_REFILLED} - %(cost)s,"  # noqa: S608
    " refilled_at = GREATEST(refilled_at, clock_timestamp())"
    f" WHERE name = %(name)s AND {_REFILLED} >= %(cost)s + %(reserve)s RETURNING tokens"
)
_LEVEL_SQL = f"SELECT {_REFILLED}, refill_per_s FROM blocking_addressbudget WHERE name = %(name)s"  # noqa: S608


def try_address_budget(cost=1, interactive=False):
    """Take `cost` requests from this egress address's budget; 0 if taken, else seconds to
    wait."""
    params = {
        "name": settings.EGRESS_ADDRESS,
        "cost": cost,
        "reserve": 0 if interactive else settings.INTERACTIVE_RESERVE,
    }
    with connection.cursor() as cursor:
        cursor.execute(_TAKE_SQL, params)
        if cursor.fetchone() is not None:
            return 0.0
        cursor.execute(_LEVEL_SQL, params)
        row = cursor.fetchone()
        if row is None:
            capacity, rate = address_bucket()
            cursor.execute(
                "INSERT INTO blocking_addressbudget"
                " (name, tokens, capacity, refill_per_s, refilled_at)"
                " VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (name) DO NOTHING",
                [params["name"], capacity, capacity, rate],
            )
            return try_address_budget(cost, interactive)
    level, rate = row
    missing = cost + params["reserve"] - level
    return missing / rate if rate > 0 else float(settings.MAX_BACKOFF_S)


def force_address_budget(cost=1):
    """Count requests a web page sends whatever the budget (a person is waiting on the
    answer): the bucket may go below zero, and bulk work then waits for it to refill."""
    if try_address_budget(cost, interactive=True):
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE blocking_addressbudget SET tokens = {_REFILLED} - %s,"  # noqa: S608
                " refilled_at = GREATEST(refilled_at, clock_timestamp()) WHERE name = %s",
                [cost, settings.EGRESS_ADDRESS],
            )


def take_address_budget(cost=1, interactive=False, max_wait_s=None):
    """Take `cost` requests, waiting up to max_wait_s; raise AddressBudgetSpent beyond."""
    max_wait_s = settings.ADDRESS_WAIT_S if max_wait_s is None else max_wait_s
    deadline = time.monotonic() + max_wait_s
    while True:
        wait = try_address_budget(cost, interactive)
        if not wait:
            return
        if time.monotonic() + wait > deadline:
            raise AddressBudgetSpent(wait)
        time.sleep(min(wait, 0.5))


def remember_write_budget(account, rate_limit):
    """Keep what the network said of this account's write budget after a write."""
    policy = rate_limit.policy
    if rate_limit.remaining is None or not policy or policy == rate_limit.address_policy:
        return  # the tightest limit was the address's: it says nothing of this account's
    reset = datetime.fromtimestamp(rate_limit.reset_at, tz=UTC) if rate_limit.reset_at else None
    LinkedAccount.objects.filter(pk=account.pk).update(
        write_points_left=rate_limit.remaining, write_window_reset_at=reset
    )


def points_left(account, now):
    """The account's write points still to spend in its current window, as last reported;
    a window that has ended is assumed full again (the next write's answer corrects it)."""
    if account.write_window_reset_at and account.write_window_reset_at > now:
        return account.write_points_left or 0
    return settings.BLUESKY_WRITE_POINTS_PER_HOUR


def dispatch(owner_id):
    """Send this person's next due batches if their budget and in-flight limit allow.

    Returns how many were sent. Serialised per person by an advisory lock, so two
    dispatchers never both spend the same budget. The rows are marked queued in the same
    transaction that chooses them, and their messages go once it has committed; a message
    the broker refused puts its row back (send_all). If Postgres goes away during the
    commit itself, whether the rows were marked is unknown: dispatch asks once it is back,
    and sends those that were (a row marked queued with no message would otherwise wait
    for the stranded sweep). Any other database error is raised as it is.
    """
    run = _Run(now=timezone.now())
    try:
        return _dispatch(owner_id, run)
    except (OperationalError, InterfaceError):
        if not run.committing or run.hook_ran or connection.in_atomic_block:
            raise  # not the commit's own failure, or an outer transaction commits
        committed = _committed_after_all(run.sent, run.now)
        if committed is None:
            raise
        send_all(committed, run.now)
        return len(committed)


@dataclass
class _Run:
    """One dispatch: when it runs (the queued_at it marks), what it marked, how far it got."""

    now: datetime
    sent: list = field(default_factory=list)
    committing: bool = False  # the transaction's body is done: an error now is the commit's
    hook_ran: bool = False  # the commit succeeded and the messages are going


def _dispatch(owner_id, run):
    now, sent = run.now, run.sent
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [7110, owner_id])
            if not cursor.fetchone()[0]:
                return 0  # another dispatcher is at it now
        # Only the columns beat's pool may read: never the password or the tokens.
        account = one_or_none(LinkedAccount.objects.filter(user_id=owner_id).only(*PACING_FIELDS))
        if account is None or not account.api_enabled or account.is_rate_limited():
            return 0
        queued = list(
            Batch.objects.filter(owner_id=owner_id, state=Batch.State.QUEUED).only("op", "dids")
        )
        slots = settings.MAX_IN_FLIGHT_PER_ACCOUNT - len(queued)
        if slots <= 0:
            return 0
        budget = points_left(account, now) - sum(batch.points() for batch in queued)
        ready = Batch.objects.filter(
            owner_id=owner_id, state=Batch.State.READY, not_before__lte=now
        ).order_by("-interactive", "id")[:slots]
        for batch in ready:
            if KillSwitch.is_engaged(TASK_OF_OP[batch.op]):
                continue
            # Work that costs no write points (mutes) goes whatever is left of them.
            if batch.points() > max(budget, 0) and not cut_to_fit(batch, budget):
                break  # the budget's next window; beat looks again
            budget -= batch.points()
            sent.append(batch)
        if not sent:
            return 0
        Batch.objects.filter(pk__in=[b.pk for b in sent]).update(
            state=Batch.State.QUEUED, queued_at=now
        )

        def publish():
            run.hook_ran = True
            send_all(sent, now)

        transaction.on_commit(publish)
        run.committing = True
    return len(sent)


def cut_to_fit(batch, points, smallest=None):
    """Cut a batch down to what `points` pay for, the rest a ready row of its own, so a
    window's last points go to part of a batch instead of waiting for the next window;
    False if they pay for fewer than `smallest` accounts (Batch.smallest_part()), True and
    nothing cut if they pay for all of it."""
    each = batch.points() // len(batch.dids) if batch.dids else 0
    if not each:
        return False  # costs nothing: nothing to cut
    keep = points // each
    if keep >= len(batch.dids):
        return True
    if keep < (smallest or Batch.smallest_part()):
        return False
    rest = {name: getattr(batch, name)[keep:] for name in ("dids", "handles", "rkeys")}
    Batch.objects.create(
        owner_id=batch.owner_id,
        campaign_id=batch.campaign_id,
        op=batch.op,
        interactive=batch.interactive,
        not_before=batch.not_before,
        failures=batch.failures,
        **rest,
    )
    for name in rest:
        setattr(batch, name, getattr(batch, name)[:keep])
    Batch.objects.filter(pk=batch.pk).update(
        dids=batch.dids, handles=batch.handles, rkeys=batch.rkeys
    )
    return True


def _committed_after_all(batches, queued_at):
    """The batches a commit that failed midway marked queued after all (it reached the
    database), asked for until Postgres answers or UNSURE_COMMIT_WAIT_S pass; None if it
    never answered (the stranded sweep then puts them back)."""
    deadline = time.monotonic() + settings.UNSURE_COMMIT_WAIT_S
    while True:
        connection.close()  # the broken connection; the query below opens a new one
        try:
            marked = set(
                Batch.objects.filter(
                    pk__in=[batch.pk for batch in batches],
                    state=Batch.State.QUEUED,
                    queued_at=queued_at,
                ).values_list("pk", flat=True)
            )
        except INFRA_ERRORS:
            if time.monotonic() >= deadline:
                return None
            time.sleep(1)
            continue
        log.warning(
            "dispatch: Postgres went away during the commit; %s of %s batches were queued",
            len(marked),
            len(batches),
        )
        return [batch for batch in batches if batch.pk in marked]


def send_all(batches, queued_at):
    """Publish a task per batch; if the broker refuses one (down, unreachable), that batch
    and the rest go back to ready for beat to send again, instead of waiting as queued rows
    without a message until the stranded sweep. Anything else that stops the sending
    midway (a bug, the soft time limit of the task it runs in) puts them back too, and is
    raised."""
    for index, batch in enumerate(batches):
        try:
            send(batch)
        except BROKER_ERRORS as error:
            unsent = [b.pk for b in batches[index:]]
            log.warning(
                "dispatch: broker refused %s batches (%s); back to ready", len(unsent), error
            )
            back_to_ready(unsent, queued_at)
            return
        except BaseException:
            back_to_ready([b.pk for b in batches[index:]], queued_at)
            raise


def back_to_ready(batch_ids, queued_at):
    """Batches this dispatch marked queued and could not send wait for beat again."""
    Batch.objects.filter(pk__in=batch_ids, state=Batch.State.QUEUED, queued_at=queued_at).update(
        state=Batch.State.READY, queued_at=None
    )


def send(batch):
    # The project's app, not Celery's current one: in a process that made another app
    # later (a test run), the current app is that one and its broker is not ours.
    celery_app.send_task(
        TASK_OF_OP[batch.op],
        args=[batch.pk],
        queue="interactive" if batch.interactive else "bulk",
    )


def hand_back(batch_id, wait_s=0, failed=False):
    """Put a queued batch back to wait for beat, due in wait_s seconds."""
    changes = {
        "state": Batch.State.READY,
        "queued_at": None,
        "not_before": timezone.now() + timedelta(seconds=max(0, wait_s)),
    }
    if failed:
        changes["failures"] = F("failures") + 1
    Batch.objects.filter(pk=batch_id).update(**changes)
