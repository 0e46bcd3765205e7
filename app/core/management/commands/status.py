"""The app's half of the operator's status screen (`shoestring-status` on the host prints
both halves): queue depths and the oldest message's age per queue, campaigns running, people
waiting on a rate limit, kill switches engaged. `--json` for `shoestring-status`."""

import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from core.queues import queue_stats


def app_status():
    from blocking.models import Campaign, KillSwitch, LinkedAccount

    now = timezone.now()
    return {
        "queues": queue_stats(),
        "campaigns_running": Campaign.objects.filter(status=Campaign.Status.RUNNING).count(),
        "people_rate_limited": LinkedAccount.objects.filter(rate_limited_until__gt=now).count(),
        "kill_switches": [
            {"task": switch.task_name, "reason": switch.reason}
            for switch in KillSwitch.objects.filter(engaged=True).order_by("task_name")
        ],
    }


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
    lines = ["queue         waiting  in flight  delayed  dead  oldest"]
    for row in status["queues"]:
        lines.append(
            f"{row['queue']:<13} {_count(row['waiting']):>7}  {_count(row['in_flight']):>9}"
            f"  {_count(row['delayed']):>7}  {_count(row['dead']):>4}  {_age(row['oldest_age_s'])}"
        )
    reserved = status["queues"][0].get("reserved_all_queues") if status["queues"] else None
    if reserved is not None:
        lines.append(f"held by workers (unacked, countdown/ETA tasks included): {reserved}")
    lines.append(
        f"campaigns running: {status['campaigns_running']}"
        f"   people waiting on a rate limit: {status['people_rate_limited']}"
    )
    switches = status["kill_switches"]
    lines.append(
        "kill switches engaged: "
        + (
            ", ".join(f"{s['task']} ({s['reason'] or 'no reason given'})" for s in switches)
            if switches
            else "none"
        )
    )
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Queue depths and oldest message age, campaigns running, people rate-limited and "
        "kill switches engaged (the app's part of shoestring-status)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options):
        status = app_status()
        if options["json"]:
            self.stdout.write(json.dumps(status))
        else:
            self.stdout.write(format_status(status))
