#!/usr/bin/python3
"""shoestring-cloudwatch: AWS's own figures for the disk's burst bucket and the instance's CPU
credits, for the guard.

Run by shoestring-cloudwatch.timer every few minutes (AWS publishes a datapoint every 1 or 5),
as a oneshot with its own memory limit: boto3 with a CloudWatch client needs more memory than
the guard, which stays a small standard-library process and only reads what this writes.

The bucket that runs out follows the volume type, and the unit's environment names it by its id
(roles/guard/vars/main.yml): CLOUDWATCH_VOLUME_ID on gp2, whose own bucket is published as
AWS/EBS BurstBalance of the volume; CLOUDWATCH_INSTANCE_ID on gp3, a flat volume whose budget is
the instance's EBS burst, AWS/EC2 EBSIOBalance% of the instance (5-minute datapoints). With
CLOUDWATCH_CPU_INSTANCE_ID it also asks for the instance's CPU credits, AWS/EC2 CPUCreditBalance
(5-minute datapoints, in credits). For each it asks CloudWatch for the minimum of each minute of
the last 20 and writes the newest to a file of CLOUDWATCH_STATE_DIR, burst-balance.json:

    {"asked_at": ..., "volume_id": "vol-...", "metric": "BurstBalance", "percent": 41.5,
     "datapoint_at": ..., "error": null}

("instance_id": "i-..." and "EBSIOBalance%" on gp3; percent and datapoint_at are null when
CloudWatch has no datapoint yet), and cpu-credit-balance.json:

    {"asked_at": ..., "instance_id": "i-...", "metric": "CPUCreditBalance", "credits": 412.5,
     "datapoint_at": ..., "error": null}

When CloudWatch cannot be asked (the instance profile does not allow
cloudwatch:GetMetricStatistics, or the endpoint does not answer), the file says why in "error",
the unit fails (systemctl --failed and shoestring-status show it) and the guard goes on with its
own model; the next run tries again."""

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

# A CloudWatch metric of one volume or instance (value: its id), the key its id has in the
# reading, the key and unit of its figure there, and the file the reading is written to.
Metric = namedtuple("Metric", "namespace name dimension value key figure unit file")


def bucket(namespace, name, dimension, key):
    return Metric(namespace, name, dimension, None, key, "percent", "%", "burst-balance.json")


# The unit's setting that carries the id -> the metric published of it. The disk's bucket is the
# first of the two set (the role sets the volume type's one); the CPU credits are the third.
DISK_METRICS = {
    "CLOUDWATCH_VOLUME_ID": bucket("AWS/EBS", "BurstBalance", "VolumeId", "volume_id"),
    "CLOUDWATCH_INSTANCE_ID": bucket("AWS/EC2", "EBSIOBalance%", "InstanceId", "instance_id"),
}
CPU_METRICS = {
    "CLOUDWATCH_CPU_INSTANCE_ID": Metric(
        "AWS/EC2",
        "CPUCreditBalance",
        "InstanceId",
        None,
        "instance_id",
        "credits",
        " credits",
        "cpu-credit-balance.json",
    )
}


def metrics_from(env):
    """The metrics to ask for, those whose id the unit's environment carries: the disk's bucket,
    the instance's CPU credits, or both."""
    metrics = []
    for table in (DISK_METRICS, CPU_METRICS):
        setting = next((setting for setting in table if env.get(setting)), None)
        if setting:
            metrics.append(table[setting]._replace(value=env[setting]))
    if not metrics:
        settings = [*DISK_METRICS, *CPU_METRICS]
        raise SystemExit(f"cloudwatch: none of {', '.join(settings)} is set")
    return metrics


def newest_datapoint(client, metric, now):
    """(figure, datapoint epoch) of the newest datapoint in the window, or (None, None)."""
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


def read(client, metric):
    """The reading as the guard gets it, and the error that made it fail (or None)."""
    now = time.time()
    reading = {
        "asked_at": now,
        metric.key: metric.value,
        "metric": metric.name,
        metric.figure: None,
        "datapoint_at": None,
        "error": None,
    }
    try:
        reading[metric.figure], reading["datapoint_at"] = newest_datapoint(client, metric, now)
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
    metrics = metrics_from(ENV)
    state_dir = Path(ENV.get("CLOUDWATCH_STATE_DIR", "/run/shoestring-cloudwatch"))
    client = boto3.client(
        "cloudwatch",
        region_name=ENV.get("CLOUDWATCH_REGION") or None,
        endpoint_url=ENV.get("CLOUDWATCH_ENDPOINT_URL") or None,
    )
    failed = False
    for metric in metrics:
        reading = read(client, metric)
        write_atomic(state_dir / metric.file, json.dumps(reading))
        figure = reading[metric.figure]
        if reading["error"]:
            print(f"cloudwatch: {metric.name}: {reading['error']}", flush=True)
            failed = True
        elif figure is None:
            print(
                f"cloudwatch: no {metric.name} datapoint of {metric.value} in the last 20 minutes"
            )
        else:
            age = reading["asked_at"] - reading["datapoint_at"]
            print(
                f"cloudwatch: {metric.name} of {metric.value} {figure:.1f}{metric.unit}"
                f" (datapoint of {age:.0f}s ago)"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
