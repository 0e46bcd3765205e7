"""The app's half of the operator's status screen, and the only place it is rendered: queue
depths and the oldest message's age per queue, campaigns running, people waiting on a rate
limit, kill switches engaged, bulk work paused through the database (core_bulkpause), and the
problems among them (a queue's oldest message older than its SLA, messages in a dead-letter
queue, a kill switch engaged, a pause held by a row).

`shoestring-manage status` prints the QUEUES and APP sections exactly as `shoestring-status`
shows them. `--json` prints one object: the numbers, `problems` and `text` (those same lines);
`shoestring-status` runs `status --json --sla QUEUE=SECONDS ...` once and prints `text`, adding
`problems` to its own."""

import argparse
import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from core.queues import queue_stats


def app_status():
    from blocking.models import Campaign, KillSwitch, LinkedAccount

    from core.models import BulkPause

    now = timezone.now()
    return {
        "queues": queue_stats(),
        "campaigns_running": Campaign.objects.filter(status=Campaign.Status.RUNNING).count(),
        "people_rate_limited": LinkedAccount.objects.filter(rate_limited_until__gt=now).count(),
        "kill_switches": [
            {"task": switch.task_name, "reason": switch.reason}
            for switch in KillSwitch.objects.filter(engaged=True).order_by("task_name")
        ],
        # A guard on another host (the database's) or an operator pauses every host's bulk pool
        # with a row; this host's own guard flag is the status screen's GUARD section.
        "bulk_paused": [
            {"source": pause.source, "reason": pause.reason, "since": pause.changed_at.isoformat()}
            for pause in BulkPause.objects.filter(paused=True).order_by("source")
        ],
    }


# The decisions: pure, on the dict app_status() returns.


def sla_exceeded(oldest_age_s, sla_s):
    """True when the oldest message has waited longer than the queue's SLA; an unknown age or
    a queue without an SLA never is."""
    return oldest_age_s is not None and sla_s is not None and oldest_age_s > sla_s


def queue_problems(row, sla_s=None):
    """One queue's problems: its oldest message older than its SLA (seconds, or None), and
    messages in its dead-letter queue (SQS only; None on Redis)."""
    problems = []
    if sla_exceeded(row["oldest_age_s"], sla_s):
        problems.append(
            f"queue {row['queue']}: oldest message {row['oldest_age_s']:.0f}s old, SLA {sla_s:g}s"
        )
    if row.get("dead"):
        problems.append(f"queue {row['queue']}: {row['dead']} messages in its dead-letter queue")
    return problems


def kill_switch_problems(switches):
    """Every engaged kill switch is a problem until it is released."""
    return [f"kill switch engaged: {switch['task']}" for switch in switches]


def bulk_pause_problems(pauses):
    """Every row that pauses bulk work on every host is a problem until it is cleared."""
    return [
        f"bulk work paused through the database by {pause['source']}"
        f" (core_bulkpause): {pause['reason'] or 'no reason given'}"
        for pause in pauses
    ]


def app_problems(status, slas):
    """The problems in app_status()'s answer, given each queue's SLA in seconds (a queue not in
    `slas` has none), in the order the screen shows them."""
    problems = []
    for row in status["queues"]:
        problems += queue_problems(row, slas.get(row["queue"]))
    return (
        problems
        + kill_switch_problems(status["kill_switches"])
        + bulk_pause_problems(status["bulk_paused"])
    )


# The rendering: the screen's QUEUES and APP sections.


def _count(value):
    return "-" if value is None else str(value)


def _age(seconds):
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_status(status):
    lines = ["QUEUES        waiting  in flight  delayed  dead  oldest"]
    for row in status["queues"]:
        lines.append(
            f"  {row['queue']:<12}{_count(row['waiting']):>7}  {_count(row['in_flight']):>9}"
            f"  {_count(row['delayed']):>7}  {_count(row['dead']):>4}  {_age(row['oldest_age_s'])}"
        )
    reserved = status["queues"][0].get("reserved_all_queues") if status["queues"] else None
    if reserved is not None:
        lines.append(f"  held by workers (unacked, countdown/ETA tasks included): {reserved}")
    switches = status["kill_switches"]
    lines += [
        "APP",
        f"  campaigns running {status['campaigns_running']},"
        f" people waiting on a rate limit {status['people_rate_limited']}",
        "  kill switches engaged: "
        + (
            ", ".join(f"{s['task']} ({s['reason'] or 'no reason given'})" for s in switches)
            or "none"
        ),
        "  bulk work paused through the database (core_bulkpause): "
        + (
            ", ".join(
                f"{p['source']} since {p['since'][:19]} ({p['reason'] or 'no reason given'})"
                for p in status["bulk_paused"]
            )
            or "no"
        ),
    ]
    return "\n".join(lines)


def parse_sla(text):
    """`QUEUE=SECONDS` (argparse type): a queue's SLA, a positive number of seconds."""
    queue, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = None
    if not queue or value is None or not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected QUEUE=SECONDS with a positive number of seconds, got {text!r}"
        )
    return queue, value


class Command(BaseCommand):
    help = (
        "Queue depths and oldest message age, campaigns running, people rate-limited, "
        "kill switches engaged and bulk work paused through the database, as shoestring-status "
        "shows them (the app's half of its screen)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object: the numbers, the problems and the text",
        )
        parser.add_argument(
            "--sla",
            action="append",
            type=parse_sla,
            default=[],
            metavar="QUEUE=SECONDS",
            help="a queue whose oldest message waits longer is a problem (once per queue)",
        )

    def handle(self, *args, **options):
        status = app_status()
        text = format_status(status)
        if options["json"]:
            problems = app_problems(status, dict(options["sla"]))
            self.stdout.write(json.dumps({**status, "problems": problems, "text": text}))
        else:
            self.stdout.write(text)
