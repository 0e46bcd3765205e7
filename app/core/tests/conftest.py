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


@pytest.fixture
def held_back(django_user_model):
    """One campaign running, one person waiting on a rate limit for 5 more minutes, one kill
    switch engaged (blocking.act_on_batch, "rollback") and one released."""
    from blocking.models import Campaign, KillSwitch, LinkedAccount
    from django.utils import timezone

    user = django_user_model.objects.create_user("held-back-probe")
    Campaign.objects.create(
        user=user, target_handle="t.test", target_did="did:plc:t", action="block", scope="followers"
    )
    account = LinkedAccount(
        user=user, handle="p.test", did="did:plc:p", service_url="https://pds.example"
    )
    account.app_password = "x" * 19
    account.rate_limited_until = timezone.now() + timezone.timedelta(minutes=5)
    account.save()
    KillSwitch.objects.create(task_name="blocking.act_on_batch", engaged=True, reason="rollback")
    KillSwitch.objects.create(task_name="blocking.fetch_follower_page", engaged=False)


@pytest.fixture
def sqs_filled(sqs_broker):
    """In bulk: 2 messages waiting, 1 in flight (received, not deleted), 1 delayed; 1 message in
    interactive's dead-letter queue."""
    sqs, urls = sqs_broker
    for _ in range(3):
        sqs.send_message(QueueUrl=urls["bulk"], MessageBody="{}")
    sqs.send_message(QueueUrl=urls["bulk"], MessageBody="{}", DelaySeconds=600)
    sqs.receive_message(QueueUrl=urls["bulk"], MaxNumberOfMessages=1, VisibilityTimeout=600)
    sqs.send_message(QueueUrl=urls["interactive-dead"], MessageBody="{}")
    return sqs_broker
