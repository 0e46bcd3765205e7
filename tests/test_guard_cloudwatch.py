"""The guard's CloudWatch reading (roles/guard/files/shoestring-guard.py): the newest
BurstBalance datapoint of the volume, asked no more often than its interval, against moto's
CloudWatch on loopback; a profile that may not ask is said once and the model goes on alone.
The whole guard pausing on CloudWatch's figure runs on the converged host (Molecule, sqs)."""

import importlib.util
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

GUARD = Path(__file__).resolve().parents[1] / "roles" / "guard" / "files" / "shoestring-guard.py"
VOLUME = "vol-0123456789abcdef0"


def load_guard():
    spec = importlib.util.spec_from_file_location("shoestring_guard", GUARD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cloudwatch_endpoint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def guard_env(monkeypatch, cloudwatch_endpoint):
    for name, value in {
        "GUARD_CLOUDWATCH_VOLUME_ID": VOLUME,
        "GUARD_CLOUDWATCH_INTERVAL_S": "60",
        "GUARD_AWS_REGION": "us-east-1",
        "GUARD_CLOUDWATCH_ENDPOINT_URL": cloudwatch_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    return cloudwatch_endpoint


def put(endpoint, volume, percent, minutes_ago):
    boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=endpoint).put_metric_data(
        Namespace="AWS/EBS",
        MetricData=[
            {
                "MetricName": "BurstBalance",
                "Unit": "Percent",
                "Value": percent,
                "Dimensions": [{"Name": "VolumeId", "Value": volume}],
                "Timestamp": datetime.now(UTC) - timedelta(minutes=minutes_ago),
            }
        ],
    )


def test_the_newest_datapoint_of_the_volume_resets_the_model(guard_env):
    guard = load_guard()
    put(guard_env, VOLUME, 8.0, minutes_ago=5)
    put(guard_env, VOLUME, 41.5, minutes_ago=1)
    put(guard_env, "vol-0fffffffffffffff0", 99.0, minutes_ago=0)  # another volume: not ours
    cloudwatch = guard.CloudWatchBalance()
    assert cloudwatch.read(now=1000.0) == 41.5
    assert cloudwatch.read(now=1030.0) is None, "asked again before its interval"
    put(guard_env, VOLUME, 12.0, minutes_ago=0)
    assert cloudwatch.read(now=1060.0) == 12.0

    volume = guard.Volume()
    volume.resync(12.0)
    assert volume.balance_percent(0) == pytest.approx(12.0)
    assert volume.credits == pytest.approx(0.12 * 5.4e6)


def test_no_datapoint_leaves_the_model_alone(guard_env):
    cloudwatch = load_guard().CloudWatchBalance()
    cloudwatch.volume_id = "vol-0aaaaaaaaaaaaaaa0"
    assert cloudwatch.read(now=0.0) is None
    assert cloudwatch.last is None


def test_a_profile_that_may_not_ask_is_said_once_and_the_model_goes_on(guard_env, capsys):
    cloudwatch = load_guard().CloudWatchBalance()
    with Stubber(cloudwatch.client) as stub:
        stub.add_client_error(
            "get_metric_statistics",
            service_error_code="AccessDenied",
            service_message="not authorized to perform: cloudwatch:GetMetricStatistics",
            http_status_code=403,
        )
        assert cloudwatch.read(now=0.0) is None
    assert cloudwatch.client is None
    assert cloudwatch.read(now=1000.0) is None
    out = capsys.readouterr().out
    assert out.count("CloudWatch refused GetMetricStatistics (AccessDenied)") == 1
    assert "the model alone" in cloudwatch.describe()


def test_a_passing_failure_is_retried_at_the_next_interval(guard_env, capsys):
    cloudwatch = load_guard().CloudWatchBalance()
    client = cloudwatch.client
    with Stubber(client) as stub:
        stub.add_client_error("get_metric_statistics", service_error_code="Throttling")
        assert cloudwatch.read(now=0.0) is None
    assert cloudwatch.client is client
    assert "trying again later" in capsys.readouterr().out


def test_without_a_volume_id_cloudwatch_is_not_asked(monkeypatch):
    monkeypatch.delenv("GUARD_CLOUDWATCH_VOLUME_ID", raising=False)
    cloudwatch = load_guard().CloudWatchBalance()
    assert cloudwatch.client is None
    assert cloudwatch.read(now=0.0) is None
    assert cloudwatch.describe() == "CloudWatch not asked (no volume id)"
