"""The app's metrics exporter (`shoestring-manage serve_metrics`, run by shoestring-metrics.service
on 127.0.0.1 only): what the workers counted (`core.task_metrics`, read from every pool's
multiprocess directory) and, asked at each scrape, what waits and what is held back: queue depth
and the oldest message's age per queue (from the broker: Redis or SQS), campaigns running, people
waiting on a rate limit, each egress address's budget left (every bucket in the table, so one
exporter shows every worker host's), kill switches engaged, the guard's pause flag, the pauses
shared through the database (core_bulkpause) and the certificate nginx serves.

Each source is read on its own: one that fails reports `shoestring_exporter_source_up 0` (and
logs why) while the others still answer."""

import logging
import os
import socket
import ssl
import time
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("shoestring.exporter")

QUEUE_COUNTS = ("waiting", "in_flight", "delayed", "dead")


class WorkerMetricsCollector:
    """Every pool's task counters: the *.db files prometheus_client's multiprocess mode writes
    under <base>/<pool>/, added up (counters and histograms summed over processes and pools)."""

    def __init__(self, base):
        self.base = Path(base)

    def collect(self):
        files = sorted(str(path) for path in self.base.glob("*/*.db"))
        return MultiProcessCollector.merge(files, accumulate=True) if files else []


class AppCollector:
    """What the database, the broker and the host say at the moment of the scrape."""

    def __init__(self, pause_flag, tls_address="", tls_server_name=""):
        self.pause_flag = pause_flag
        self.tls_address = tls_address
        self.tls_server_name = tls_server_name

    def collect(self):
        up = GaugeMetricFamily(
            "shoestring_exporter_source_up",
            "1 when the exporter could read this source at the last scrape.",
            labels=["source"],
        )
        sources = [("queues", self.queues), ("database", self.database), ("guard", self.guard)]
        if self.tls_address:
            sources.append(("certificate", self.certificate))
        for name, source in sources:
            try:
                families = list(source())
            except Exception:  # one broken source must not hide the others
                log.exception("metrics source %s failed", name)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from families
        yield up

    def queues(self):
        from core.queues import queue_stats

        messages = GaugeMetricFamily(
            "shoestring_queue_messages",
            "Messages in each Celery queue, as the broker counts them (Redis: waiting only; "
            "SQS: waiting, in_flight, delayed, and dead in its dead-letter queue).",
            labels=["queue", "state"],
        )
        oldest = GaugeMetricFamily(
            "shoestring_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in each queue (absent when the broker cannot "
            "tell; 0 when the queue is empty).",
            labels=["queue"],
        )
        reserved = GaugeMetricFamily(
            "shoestring_queue_reserved_messages",
            "Messages the workers took but have not acknowledged, all queues together "
            "(countdown/ETA tasks wait there in worker memory; Redis only).",
        )
        for row in queue_stats():
            for state in QUEUE_COUNTS:
                if row.get(state) is not None:
                    messages.add_metric([row["queue"], state], row[state])
            if row["oldest_age_s"] is not None:
                oldest.add_metric([row["queue"]], row["oldest_age_s"])
            elif row.get("waiting") == 0:
                oldest.add_metric([row["queue"]], 0)
            if row.get("reserved_all_queues") is not None:
                reserved.add_metric([], row["reserved_all_queues"])
        return [messages, oldest, reserved]

    def database(self):
        from blocking.models import AddressBudget, Campaign, KillSwitch, LinkedAccount
        from django.db import close_old_connections, connection
        from django.utils import timezone

        from core.models import BulkPause

        close_old_connections()
        try:
            now = timezone.now()
            running = GaugeMetricFamily("shoestring_campaigns_running", "Campaigns running now.")
            running.add_metric([], Campaign.objects.filter(status=Campaign.Status.RUNNING).count())
            waiting = GaugeMetricFamily(
                "shoestring_people_rate_limited",
                "Linked accounts waiting for the network's per-account budget to refill.",
            )
            waiting.add_metric([], LinkedAccount.objects.filter(rate_limited_until__gt=now).count())
            switches = GaugeMetricFamily(
                "shoestring_kill_switch_engaged",
                "1 for each task name whose kill switch is engaged (0 when released).",
                labels=["task"],
            )
            engaged_total = 0
            for name, engaged in KillSwitch.objects.values_list("task_name", "engaged"):
                switches.add_metric([name], int(engaged))
                engaged_total += int(engaged)
            engaged_count = GaugeMetricFamily(
                "shoestring_kill_switches_engaged", "Kill switches engaged now."
            )
            engaged_count.add_metric([], engaged_total)
            tokens = GaugeMetricFamily(
                "shoestring_address_budget_tokens",
                "Requests the accounts may still send from one egress address now (its "
                "per-IP token bucket, refilled to this moment; budget: SHOESTRING_EGRESS_ADDRESS).",
                labels=["budget"],
            )
            capacity = GaugeMetricFamily(
                "shoestring_address_budget_capacity",
                "Capacity of one egress address's per-IP token bucket.",
                labels=["budget"],
            )
            for budget in AddressBudget.objects.all():
                refilled = budget.tokens + budget.refill_per_s * max(
                    0.0, (now - budget.refilled_at).total_seconds()
                )
                tokens.add_metric([budget.name], min(budget.capacity, refilled))
                capacity.add_metric([budget.name], budget.capacity)
            shared = GaugeMetricFamily(
                "shoestring_bulk_paused_by",
                "1 for each core_bulkpause row that pauses bulk work on every worker host (a guard "
                "on another host, the database's, or an operator), 0 for one that no longer does.",
                labels=["source"],
            )
            for source, paused in BulkPause.objects.values_list("source", "paused"):
                shared.add_metric([source], int(paused))
            return [running, waiting, switches, engaged_count, tokens, capacity, shared]
        finally:
            # Each scrape runs in a thread of its own: its connection would never be reused.
            connection.close()

    def guard(self):
        paused = GaugeMetricFamily(
            "shoestring_bulk_pause_flag",
            "1 while the guard's pause flag exists (the bulk pool stops consuming).",
        )
        paused.add_metric([], int(os.path.exists(self.pause_flag)))
        return [paused]

    def certificate(self):
        from cryptography import x509

        host, _, port = self.tls_address.rpartition(":")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed on the demo: read it, do not trust it
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=self.tls_server_name or None) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        expires = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        family = GaugeMetricFamily(
            "shoestring_certificate_expiry_timestamp_seconds",
            "When the certificate nginx serves expires (Unix time), read over TLS on loopback.",
        )
        family.add_metric([], expires)
        return [family]


def registry_for(metrics_dir, pause_flag, tls_address="", tls_server_name=""):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(WorkerMetricsCollector(metrics_dir))
    registry.register(AppCollector(pause_flag, tls_address, tls_server_name))
    return registry


def serve(registry, address, port):
    """Serve /metrics until the process is stopped."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=address, registry=registry)
    log.warning("serving metrics on http://%s:%s/metrics", address, port)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()
