"""How much work waits in each Celery queue, and for how long, asked of the broker itself.

On SQS Celery has neither events nor remote control, so nothing here asks the workers: Redis
answers LLEN and the oldest message's publish time (the `sent_at` header every task carries,
see `core.signals`); SQS answers GetQueueAttributes (visible, in flight, delayed, and the same for
each dead-letter queue) and, where the credentials allow, CloudWatch the age of the oldest
message. The status screen and the metrics exporter both read these numbers.
"""

import datetime
import json
import time

from django.conf import settings

SENT_AT_HEADER = "shoestring_sent_at"


def queue_stats(now=None):
    """One dict per Celery queue: queue, waiting, in_flight, delayed, oldest_age_s (None when
    unknown), dead (messages in its dead-letter queue, SQS only)."""
    now = time.time() if now is None else now
    if settings.CELERY_BROKER_URL.startswith("sqs://"):
        return _sqs_stats(now)
    return _redis_stats(now)


def _message_age(raw, now):
    if raw is None:
        return None
    try:
        sent_at = json.loads(raw)["headers"][SENT_AT_HEADER]
    except (ValueError, KeyError, TypeError):
        return None
    return max(0.0, now - float(sent_at))


def _redis_stats(now):
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)
    # Tasks a worker has taken but not yet acknowledged (countdown/ETA tasks wait there, in
    # the worker's memory) sit in kombu's "unacked" hash, for all queues together.
    reserved = client.hlen("unacked")
    stats = []
    for name in settings.CELERY_QUEUE_NAMES:
        # kombu LPUSHes and its consumers BRPOP: the oldest message is the last element.
        stats.append(
            {
                "queue": name,
                "waiting": client.llen(name),
                "in_flight": None,
                "delayed": None,
                "oldest_age_s": _message_age(client.lindex(name, -1), now),
                "dead": None,
            }
        )
    if stats:
        stats[0]["reserved_all_queues"] = reserved
    return stats


def _sqs_client(service):
    import boto3

    return boto3.client(
        service, region_name=settings.SQS_REGION, endpoint_url=settings.SQS_ENDPOINT_URL
    )


SQS_COUNTS = {
    "waiting": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


def _sqs_stats(now):
    sqs = _sqs_client("sqs")
    stats = []
    for name in settings.CELERY_QUEUE_NAMES:
        url = settings.CELERY_BROKER_TRANSPORT_OPTIONS["predefined_queues"][name]["url"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=list(SQS_COUNTS.values())
        )["Attributes"]
        row = {key: int(attributes.get(attr, 0)) for key, attr in SQS_COUNTS.items()}
        try:
            row["dead"] = int(
                sqs.get_queue_attributes(
                    QueueUrl=f"{url}-dead", AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
        except sqs.exceptions.QueueDoesNotExist:
            row["dead"] = None
        row["queue"] = name
        row["oldest_age_s"] = _sqs_oldest_age(url.rsplit("/", 1)[1], now)
        stats.append(row)
    return stats


# CloudWatch's answer per queue, kept for a minute: its SQS datapoints are a minute apart,
# and the metrics exporter, scraped every 15 s, would otherwise ask 3 times a scrape
# (525,600 billed requests a month: docs/aws.md, "What it costs").
OLDEST_AGE_TTL_S = 60
_oldest_age_asked = {}


def _sqs_oldest_age(queue_name, now):
    """CloudWatch's ApproximateAgeOfOldestMessage of the last 5 minutes, or None when the
    instance profile may not read CloudWatch or it has no data point yet; the answer of the
    last minute when there is one (an unknown age included)."""
    asked = _oldest_age_asked.get(queue_name)
    if asked is not None and 0 <= now - asked[0] < OLDEST_AGE_TTL_S:
        return asked[1]
    age = _ask_oldest_age(queue_name, now)
    _oldest_age_asked[queue_name] = (now, age)
    return age


def _ask_oldest_age(queue_name, now):
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        points = _sqs_client("cloudwatch").get_metric_statistics(
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": queue_name}],
            StartTime=datetime.datetime.fromtimestamp(now - 300, datetime.UTC),
            EndTime=datetime.datetime.fromtimestamp(now, datetime.UTC),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
    except (BotoCoreError, ClientError):
        return None
    if not points:
        return None
    return float(max(points, key=lambda point: point["Timestamp"])["Maximum"])
