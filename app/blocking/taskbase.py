"""How every task of the block service runs, and how it tells a wait from a failure.

- A kill switch (admin, KillSwitch) makes a task return at once without touching the
  network; its work is data (a Batch row, a campaign's next_page_at), so beat releases
  it again once the switch is off. Nothing retries in a loop meanwhile.
- The database or the broker briefly away (OperationalError, InterfaceError, a kombu
  connection error) is a wait: the task tries again in INFRA_RETRY_S seconds, as often as
  it takes, and a periodic task simply waits for its next run.
- Network errors are counted on the work's own row (Batch.failures,
  Campaign.page_failures), never by Celery's retry counter, so waits never use them up.
"""

import logging
import time

import kombu.exceptions
from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .models import KillSwitch

log = logging.getLogger(__name__)

INFRA_ERRORS = (OperationalError, InterfaceError, kombu.exceptions.OperationalError)


class GuardedTask(Task):
    periodic = False

    def __call__(self, *args, **kwargs):
        started = time.monotonic()
        try:
            if KillSwitch.is_engaged(self.name):
                log.warning("%s: kill switch engaged; its work waits as data", self.name)
                self.on_kill_switch(*args, **kwargs)
                return None
            return super().__call__(*args, **kwargs)
        except INFRA_ERRORS as error:
            if self.periodic:
                log.warning("%s: %s; the next run tries again", self.name, error)
                return None
            log.warning("%s: %s; trying again in %ss", self.name, error, settings.INFRA_RETRY_S)
            raise self.retry(countdown=settings.INFRA_RETRY_S, max_retries=None) from error
        finally:
            log.info(
                "%s%s took %.3fs",
                self.name,
                self.work_of(*args, **kwargs),
                time.monotonic() - started,
            )

    def on_kill_switch(self, *args, **kwargs):
        """Hand the work back to beat; by default it is already data."""

    def work_of(self, *args, **kwargs):
        """What a run worked on, for its log line, so a row can be followed through the
        journal (Celery's own lines name the task id only); never a secret: none by default."""
        return ""


def task(name, **options):
    options.setdefault("time_limit", settings.CELERY_TASK_TIME_LIMIT)
    options.setdefault("soft_time_limit", settings.CELERY_TASK_SOFT_TIME_LIMIT)
    options.setdefault("max_retries", None)
    return shared_task(name=name, base=options.pop("base", GuardedTask), bind=True, **options)


# Work that must survive a worker dying mid-task: acknowledged only when done,
# and re-queued if the worker process is killed.
DURABLE = {"acks_late": True, "reject_on_worker_lost": True}


class PeriodicTask(GuardedTask):
    periodic = True


def periodic(name):
    # A run that dies holds its lock until this limit passes, then the next run goes.
    limit = max(10, int(settings.PERIODIC_INTERVAL_S * 4))
    return task(name, base=PeriodicTask, time_limit=limit, soft_time_limit=limit - 5)
