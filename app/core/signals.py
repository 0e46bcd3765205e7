"""Every task message carries the time it was published, so the age of the oldest message in
a Redis queue can be read from the broker (`core.queues`). SQS keeps its own."""

import time

from celery.signals import before_task_publish

from core.queues import SENT_AT_HEADER


@before_task_publish.connect(dispatch_uid="shoestring-sent-at")
def stamp_sent_at(headers=None, **kwargs):
    if headers is not None:
        headers.setdefault(SENT_AT_HEADER, time.time())
