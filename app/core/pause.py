"""Pause a pool's consumption while the guard says so: how the guard (roles/guard) pauses bulk
work on both brokers and on every worker host. On SQS Celery has no remote control (no
`cancel_consumer` from outside), so each worker looks for itself and cancels its own consumer of
the pausable queues; tasks in flight finish, new ones wait in the broker. It pauses while the
local flag file exists (the guard on this host) or any row of core_bulkpause says paused (a
guard on another host, the database's, which writes its row over psql: core.models.BulkPause),
and consumes again when neither does. Only queues the worker was started with are touched: the
interactive pool never pauses.

The database is read from the worker's parent process, the one that forks the prefork pool's
children, every SHOESTRING_GUARD_DB_POLL_S seconds: through Django's connection (the same
settings as every other query, TLS included), closed again after each read, so no open
connection is ever there to be inherited by a child forked later (two processes on one socket
corrupt it). A new connection every 15 s costs Postgres one backend start; a connection kept
open would cost a backend for good per bulk pool. When the database cannot be read the last
rows read stand (a pause is not lifted by an outage, nor started by one), said once.

Settings (Django settings or the environment): SHOESTRING_GUARD_PAUSE_FLAG (the flag's path),
SHOESTRING_GUARD_PAUSABLE_QUEUES (comma-separated, default "bulk"), SHOESTRING_GUARD_POLL_S (the
flag, default 5), SHOESTRING_GUARD_DB_POLL_S (the database, default 15)."""

import logging
import os

from celery import bootsteps

logger = logging.getLogger("shoestring.pause")

DEFAULT_FLAG = "/run/shoestring-guard/pause-bulk"


def setting(name, default):
    from django.conf import settings

    return getattr(settings, name, None) or os.environ.get(name) or default


def seconds_setting(name, default):
    from django.core.exceptions import ImproperlyConfigured

    value = setting(name, default)
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise ImproperlyConfigured(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def paused_rows():
    """{source: reason} of every core_bulkpause row that says paused; the connection is closed
    again whatever happens (see the module's docstring)."""
    from django.db import connection

    from core.models import BulkPause

    try:
        return dict(BulkPause.objects.filter(paused=True).values_list("source", "reason"))
    finally:
        connection.close()


class PauseWhenFlagged(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.flag = setting("SHOESTRING_GUARD_PAUSE_FLAG", DEFAULT_FLAG)
        pausable = setting("SHOESTRING_GUARD_PAUSABLE_QUEUES", "bulk")
        self.pausable = [name.strip() for name in pausable.split(",") if name.strip()]
        self.poll_s = seconds_setting("SHOESTRING_GUARD_POLL_S", "5")
        self.db_poll_s = seconds_setting("SHOESTRING_GUARD_DB_POLL_S", "15")
        self.queues = None
        self.paused = False
        self.causes = []
        self.paused_by = {}  # {source: reason}: the rows last read
        self.db_error = None  # why the last read failed; None once it worked
        self.timer_refs = []

    def start(self, consumer):
        if self.queues is None:
            consumed = set(consumer.app.amqp.queues.consume_from or {})
            self.queues = [name for name in self.pausable if name in consumed]
        if not self.queues:
            return
        # After a reconnect the consumer is rebuilt from the queues still selected, so a
        # pause survives it; self.paused is kept to resume once the causes are gone.
        self.check_database(consumer)
        self.timer_refs = [
            consumer.timer.call_repeatedly(self.poll_s, self.check, (consumer,)),
            consumer.timer.call_repeatedly(self.db_poll_s, self.check_database, (consumer,)),
        ]

    def stop(self, consumer):
        for timer_ref in self.timer_refs:
            timer_ref.cancel()
        self.timer_refs = []

    def check_database(self, consumer):
        from django.db import DatabaseError

        try:
            self.paused_by = paused_rows()
        except DatabaseError as error:
            if self.db_error is None:
                logger.warning(
                    "cannot read core_bulkpause (%s); keeping what it said last: %s",
                    " ".join(str(error).split()),
                    self.describe_rows(),
                )
            self.db_error = error
        else:
            if self.db_error is not None:
                logger.warning("core_bulkpause can be read again: %s", self.describe_rows())
            self.db_error = None
        self.check(consumer)

    def describe_rows(self):
        if not self.paused_by:
            return "no source pauses bulk work"
        return "; ".join(
            f"{source} paused it ({reason or 'no reason given'})"
            for source, reason in sorted(self.paused_by.items())
        )

    def check(self, consumer):
        causes = [f"{self.flag} exists"] if os.path.exists(self.flag) else []
        if self.paused_by:
            causes.append(f"core_bulkpause: {self.describe_rows()}")
        queues = ", ".join(self.queues)
        if causes and not self.paused:
            for name in self.queues:
                consumer.cancel_task_queue(name)
            self.paused = True
            logger.warning("paused: stopped consuming from %s (%s)", queues, "; ".join(causes))
        elif not causes and self.paused:
            for name in self.queues:
                consumer.add_task_queue(name)
            self.paused = False
            logger.warning(
                "resumed: consuming from %s again (%s is gone and no source in core_bulkpause"
                " pauses it)",
                queues,
                self.flag,
            )
        elif causes != self.causes:
            logger.warning("still paused: %s (%s)", queues, "; ".join(causes))
        self.causes = causes
