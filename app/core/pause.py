"""Pause a pool's consumption while a flag file exists: how the guard (roles/guard) pauses bulk
work on both brokers. On SQS Celery has no remote control (no `cancel_consumer` from outside),
so each worker looks for the flag itself and cancels its own consumer of the pausable queues;
tasks in flight finish, new ones wait in the broker. When the flag is gone it consumes again.
Only queues the worker was started with are touched: the interactive pool never pauses.

Settings (Django settings or the environment): SHOESTRING_GUARD_PAUSE_FLAG (the flag's path),
SHOESTRING_GUARD_PAUSABLE_QUEUES (comma-separated, default "bulk"), SHOESTRING_GUARD_POLL_S."""

import logging
import os

from celery import bootsteps

logger = logging.getLogger("shoestring.pause")

DEFAULT_FLAG = "/run/shoestring-guard/pause-bulk"


def setting(name, default):
    from django.conf import settings

    return getattr(settings, name, None) or os.environ.get(name) or default


class PauseWhenFlagged(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.flag = setting("SHOESTRING_GUARD_PAUSE_FLAG", DEFAULT_FLAG)
        pausable = setting("SHOESTRING_GUARD_PAUSABLE_QUEUES", "bulk")
        self.pausable = [name.strip() for name in pausable.split(",") if name.strip()]
        self.poll_s = float(setting("SHOESTRING_GUARD_POLL_S", "5"))
        self.queues = None
        self.paused = False
        self.timer_ref = None

    def start(self, consumer):
        if self.queues is None:
            consumed = set(consumer.app.amqp.queues.consume_from or {})
            self.queues = [name for name in self.pausable if name in consumed]
        if not self.queues:
            return
        # After a reconnect the consumer is rebuilt from the queues still selected, so a
        # pause survives it; self.paused is kept to resume once the flag is gone.
        self.check(consumer)
        self.timer_ref = consumer.timer.call_repeatedly(self.poll_s, self.check, (consumer,))

    def stop(self, consumer):
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def check(self, consumer):
        flagged = os.path.exists(self.flag)
        if flagged and not self.paused:
            for name in self.queues:
                consumer.cancel_task_queue(name)
            self.paused = True
            logger.warning(
                "paused: stopped consuming from %s (%s exists)", ", ".join(self.queues), self.flag
            )
        elif not flagged and self.paused:
            for name in self.queues:
                consumer.add_task_queue(name)
            self.paused = False
            logger.warning(
                "resumed: consuming from %s again (%s is gone)", ", ".join(self.queues), self.flag
            )
