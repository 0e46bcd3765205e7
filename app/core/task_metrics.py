"""What the workers count, from Celery's task signals: runs, failures, retries and duration by
task name, and the blocks and unblocks made. Signals fire inside the worker on both brokers
(SQS has no events or remote control, so nothing outside a worker could count these).

In a pool, PROMETHEUS_MULTIPROC_DIR names the pool's directory on tmpfs (systemd's
RuntimeDirectory, removed whenever the pool stops, so every start begins at zero):
prometheus_client keeps each prefork process's numbers in a file of its own there, and the
exporter (`core.exporter`) adds up every pool's files. Without it (web, tests) the numbers
stay in the process and harm nothing."""

import time

from celery.signals import task_failure, task_postrun, task_prerun, task_retry
from prometheus_client import Counter, Histogram

TASK_RUNS = Counter(
    "shoestring_task_runs",
    "Task runs that ended, by task name and Celery state (SUCCESS, FAILURE, RETRY, ...).",
    ["task", "state"],
)
TASK_FAILURES = Counter(
    "shoestring_task_failures", "Task runs that raised, by task name.", ["task"]
)
TASK_RETRIES = Counter(
    "shoestring_task_retries", "Task runs that asked to be retried, by task name.", ["task"]
)
TASK_DURATION = Histogram(
    "shoestring_task_duration_seconds",
    "Wall time of a task run, by task name.",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
NETWORK_ACTIONS = Counter(
    "shoestring_network_actions",
    "Blocks, mutes, unblocks and unmutes made on the network.",
    ["action"],
)

_started = {}


def count_actions(action, count):
    if count:
        NETWORK_ACTIONS.labels(action=action).inc(count)


def _name(sender, task=None):
    return getattr(task or sender, "name", None) or "unknown"


@task_prerun.connect(dispatch_uid="shoestring-metrics-prerun")
def _task_started(task_id=None, **kwargs):
    _started[task_id] = time.monotonic()


@task_postrun.connect(dispatch_uid="shoestring-metrics-postrun")
def _task_ended(sender=None, task_id=None, task=None, state=None, **kwargs):
    name = _name(sender, task)
    TASK_RUNS.labels(task=name, state=state or "UNKNOWN").inc()
    started = _started.pop(task_id, None)
    if started is not None:
        TASK_DURATION.labels(task=name).observe(time.monotonic() - started)


@task_failure.connect(dispatch_uid="shoestring-metrics-failure")
def _task_failed(sender=None, **kwargs):
    TASK_FAILURES.labels(task=_name(sender)).inc()


@task_retry.connect(dispatch_uid="shoestring-metrics-retry")
def _task_retried(sender=None, **kwargs):
    TASK_RETRIES.labels(task=_name(sender)).inc()
