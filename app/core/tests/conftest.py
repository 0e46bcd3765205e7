"""Brokers for the queue tests: a Redis database no worker consumes from, and SQS queues (with
their dead-letter queues) on the local moto_server."""

import time

import boto3
import pytest


@pytest.fixture
def redis_broker(redis_url, settings):
    """A database of the test Redis no worker consumes from."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    settings.CELERY_BROKER_URL = url
    return url


@pytest.fixture
def sqs_broker(moto_sqs, settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    prefix = f"status-{time.monotonic_ns()}-"
    base = f"{moto_sqs}/123456789012/"
    settings.CELERY_BROKER_URL = "sqs://testing:testing@" + moto_sqs.removeprefix("http://")
    settings.SQS_ENDPOINT_URL = moto_sqs
    settings.SQS_REGION = "us-east-1"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "predefined_queues": {
            name: {"url": f"{base}{prefix}{name}"} for name in settings.CELERY_QUEUE_NAMES
        }
    }
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_sqs)
    urls = {}
    for name in settings.CELERY_QUEUE_NAMES:
        urls[name] = sqs.create_queue(QueueName=f"{prefix}{name}")["QueueUrl"]
        urls[f"{name}-dead"] = sqs.create_queue(QueueName=f"{prefix}{name}-dead")["QueueUrl"]
    return sqs, urls
