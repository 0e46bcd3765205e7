#!/usr/bin/python3
"""shoestring-cloudwatch: AWS's own figure for the disk's burst bucket, for the guard.

Run by shoestring-cloudwatch.timer every few minutes (AWS publishes a datapoint every 1 or 5),
as a oneshot with its own memory limit: boto3 with a CloudWatch client needs more memory than
the guard, which stays a small standard-library process and only reads what this writes.

The bucket that runs out follows the volume type, and the unit's environment names it by its id
(roles/guard/vars/main.yml): CLOUDWATCH_VOLUME_ID on gp2, whose own bucket is published as
AWS/EBS BurstBalance of the volume; CLOUDWATCH_INSTANCE_ID on gp3, a flat volume whose budget is
the instance's EBS burst, AWS/EC2 EBSIOBalance% of the instance (5-minute datapoints). It asks
CloudWatch for the minimum of each minute of the last 20 and writes the newest to
CLOUDWATCH_STATE_DIR/burst-balance.json:

    {"asked_at": ..., "volume_id": "vol-...", "metric": "BurstBalance", "percent": 41.5,
     "datapoint_at": ..., "error": null}

("instance_id": "i-..." and "EBSIOBalance%" on gp3; percent and datapoint_at are null when
CloudWatch has no datapoint yet). When CloudWatch cannot be asked (the instance profile does not
allow cloudwatch:GetMetricStatistics, or the endpoint does not answer), the file says why in
"error", the unit fails (systemctl --failed and shoestring-status show it) and the guard goes on
with its own model; the next run tries again."""

import json
import os
import sys
import time
from collections import namedtuple
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

ENV = os.environ
WINDOW_S = 1200
DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")

# A CloudWatch metric of one volume or instance, and the key its id has in the reading.
Metric = namedtuple("Metric", "namespace name dimension value key")

# The unit's setting that carries the id -> the metric published of it.
METRICS = {
    "CLOUDWATCH_VOLUME_ID": ("AWS/EBS", "BurstBalance", "VolumeId", "volume_id"),
    "CLOUDWATCH_INSTANCE_ID": ("AWS/EC2", "EBSIOBalance%", "InstanceId", "instance_id"),
}


def metric_from(env):
    """The metric to ask for: the one whose id the unit's environment carries."""
    for setting, (namespace, name, dimension, key) in METRICS.items():
        if env.get(setting):
            return Metric(namespace, name, dimension, env[setting], key)
    raise SystemExit(f"cloudwatch: neither {' nor '.join(METRICS)} is set")


def newest_datapoint(client, metric, now):
    """(percent, datapoint epoch) of the newest datapoint in the window, or (None, None)."""
    answer = client.get_metric_statistics(
        Namespace=metric.namespace,
        MetricName=metric.name,
        Dimensions=[{"Name": metric.dimension, "Value": metric.value}],
        StartTime=now - WINDOW_S,
        # The minute under way too: its datapoint is stamped with the minute's start.
        EndTime=now + 60,
        Period=60,
        Statistics=["Minimum"],
    )
    points = answer.get("Datapoints", [])
    if not points:
        return None, None
    newest = max(points, key=lambda point: point["Timestamp"])
    return float(newest["Minimum"]), newest["Timestamp"].timestamp()


def read(metric, region, endpoint_url):
    """The reading as the guard gets it, and the error that made it fail (or None)."""
    now = time.time()
    reading = {
        "asked_at": now,
        metric.key: metric.value,
        "metric": metric.name,
        "percent": None,
        "datapoint_at": None,
        "error": None,
    }
    client = boto3.client(
        "cloudwatch", region_name=region or None, endpoint_url=endpoint_url or None
    )
    try:
        reading["percent"], reading["datapoint_at"] = newest_datapoint(client, metric, now)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "") or "error"
        if code in DENIED:
            reading["error"] = (
                f"CloudWatch refused GetMetricStatistics ({code}): the instance profile must"
                " allow cloudwatch:GetMetricStatistics"
            )
        else:
            reading["error"] = f"CloudWatch failed ({code}): {error}"
    except BotoCoreError as error:
        reading["error"] = f"CloudWatch unreachable: {error}"
    return reading


def write_atomic(path, text):
    partial = path.with_name(path.name + ".new")
    partial.write_text(text)
    # Readable by the guard and shoestring-status; the service's umask is 0077.
    partial.chmod(0o644)
    partial.replace(path)


def main():
    metric = metric_from(ENV)
    state_dir = Path(ENV.get("CLOUDWATCH_STATE_DIR", "/run/shoestring-cloudwatch"))
    reading = read(metric, ENV.get("CLOUDWATCH_REGION", ""), ENV.get("CLOUDWATCH_ENDPOINT_URL", ""))
    write_atomic(state_dir / "burst-balance.json", json.dumps(reading))
    if reading["error"]:
        print(f"cloudwatch: {reading['error']}", flush=True)
        return 1
    if reading["percent"] is None:
        print(f"cloudwatch: no {metric.name} datapoint of {metric.value} in the last 20 minutes")
    else:
        age = reading["asked_at"] - reading["datapoint_at"]
        print(
            f"cloudwatch: {metric.name} of {metric.value} {reading['percent']:.1f}%"
            f" (datapoint of {age:.0f}s ago)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
