"""Create the SQS queues (and their dead-letter queues) the Celery queues need. Idempotent.

Prints one line per queue: "created", "updated" or "unchanged", so a playbook can
report `changed` honestly.
"""

import json

import boto3
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or update the SQS queues and dead-letter queues for every Celery queue."

    def handle(self, *args, **options):
        sqs = boto3.client(
            "sqs", region_name=settings.SQS_REGION, endpoint_url=settings.SQS_ENDPOINT_URL
        )
        visibility = str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])
        for name in settings.CELERY_QUEUE_NAMES:
            queue = f"{settings.SQS_QUEUE_PREFIX}{name}"
            dead_url, dead_state = self._ensure(
                sqs, f"{queue}-dead", {"MessageRetentionPeriod": "1209600"}
            )
            dead_arn = sqs.get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            wanted = {
                "VisibilityTimeout": visibility,
                "ReceiveMessageWaitTimeSeconds": "20",
                "RedrivePolicy": json.dumps(
                    {
                        "deadLetterTargetArn": dead_arn,
                        "maxReceiveCount": settings.SQS_MAX_RECEIVE_COUNT,
                    }
                ),
            }
            _, state = self._ensure(sqs, queue, wanted)
            self.stdout.write(f"{queue}: {state} (dead letters: {queue}-dead {dead_state})")

    def _ensure(self, sqs, queue, wanted):
        try:
            url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            return sqs.create_queue(QueueName=queue, Attributes=wanted)["QueueUrl"], "created"
        current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(wanted))["Attributes"]
        differs = {
            key: value
            for key, value in wanted.items()
            if (json.loads(current.get(key, "{}")) if key == "RedrivePolicy" else current.get(key))
            != (json.loads(value) if key == "RedrivePolicy" else value)
        }
        if not differs:
            return url, "unchanged"
        sqs.set_queue_attributes(QueueUrl=url, Attributes=differs)
        return url, "updated"
