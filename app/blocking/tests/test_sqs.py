"""The SQS broker path against a local SQS-compatible endpoint (moto_server)."""

import json
import os

import boto3
import pytest
from conftest import WORKER_SETTINGS, Worker, run_manage, sqs_settings, wait_until
from django.db import connection

from blocking import buckets
from blocking.models import Campaign
from blocking.tests.test_e2e import unlimited

pytestmark = pytest.mark.slow


def app_env(moto_sqs, prefix, **extra):
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_NAME=connection.settings_dict["NAME"],
        **sqs_settings(moto_sqs, prefix),
        **extra,
    )


@pytest.mark.django_db
def test_queue_creation_is_idempotent_and_sets_a_dead_letter_queue(moto_sqs):
    env = app_env(moto_sqs, "idem-")
    first = run_manage(env, "create_sqs_queues")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": created") == 3
    second = run_manage(env, "create_sqs_queues")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count(": unchanged") == 3
    sqs = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=moto_sqs,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    url = sqs.get_queue_url(QueueName="idem-bulk")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith("idem-bulk-dead")
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert int(attributes["VisibilityTimeout"]) > 300 + 300


@pytest.mark.django_db(transaction=True)
def test_a_campaign_runs_through_sqs(client, person, fakesky, moto_sqs, tmp_path):
    env = app_env(moto_sqs, "e2e-", **WORKER_SETTINGS)
    assert run_manage(env, "create_sqs_queues").returncode == 0
    worker = Worker(env, tmp_path / "sqs-worker.log")
    try:
        worker.start()
        user = person()
        unlimited(fakesky)
        assert buckets.debit(user, 150)
        campaign = Campaign.objects.create(
            user=user,
            target_handle="sqs-150.fake.test",
            target_did=fakesky.did("sqs-150.fake.test"),
            action="block",
            scope="followers",
            expected=150,
            tokens_debited=150,
        )
        queued = run_manage(
            env,
            "shell",
            "--no-imports",
            "-c",
            f"from blocking import tasks; tasks.start_campaign.delay({campaign.pk})",
        )
        assert queued.returncode == 0, queued.stderr

        def done():
            campaign.refresh_from_db()
            return campaign.status == Campaign.Status.DONE

        wait_until(done, 120, interval=0.5, message="the campaign over SQS")
        state = fakesky.state(user.handle)
        assert state["block_count"] == state["distinct_blocked"] == 150
    finally:
        worker.stop()
