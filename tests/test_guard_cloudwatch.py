"""CloudWatch's burst balance and CPU credits for the guard: shoestring-cloudwatch
(roles/guard/files/shoestring_cloudwatch.py), the oneshot that asks CloudWatch (moto's, on
loopback) for the volume type's metric (gp2: the volume's BurstBalance; gp3: the instance's
EBSIOBalance%) and the instance's CPUCreditBalance, and writes the newest datapoint of each to a
file, and the guard's side (roles/guard/files/shoestring_guard.py), which resets its model to
each new datapoint and says once when CloudWatch could not be asked. The whole chain pausing and
resuming bulk work runs on the converged sqs host (molecule/default/tests/test_guard.py)."""

import json
import socket
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber

from tests.moto_server import moto_endpoint
from tests.role_files import load

VOLUME = "vol-0123456789abcdef0"
INSTANCE = "i-0123456789abcdef0"


@pytest.fixture(scope="module")
def endpoint():
    with moto_endpoint() as url:
        yield url


@pytest.fixture
def settings(monkeypatch, endpoint, tmp_path):
    for name, value in {
        "CLOUDWATCH_VOLUME_ID": VOLUME,
        "CLOUDWATCH_REGION": "us-east-1",
        "CLOUDWATCH_ENDPOINT_URL": endpoint,
        "CLOUDWATCH_STATE_DIR": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def put(endpoint, volume, percent, minutes_ago):
    """A gp2 volume's BurstBalance datapoint, as AWS publishes one."""
    put_metric(endpoint, ("AWS/EBS", "BurstBalance", "VolumeId", volume), percent, minutes_ago)


def put_metric(endpoint, metric, figure, minutes_ago, unit="Percent"):
    namespace, name, dimension, value = metric
    boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=endpoint).put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": name,
                "Unit": unit,
                "Value": figure,
                "Dimensions": [{"Name": dimension, "Value": value}],
                "Timestamp": datetime.now(UTC) - timedelta(minutes=minutes_ago),
            }
        ],
    )


def put_cpu_credits(endpoint, instance, credits, minutes_ago, name="CPUCreditBalance"):
    """An instance's CPUCreditBalance datapoint (a count of credits), as AWS publishes one."""
    put_metric(endpoint, ("AWS/EC2", name, "InstanceId", instance), credits, minutes_ago, "Count")


def written(state_dir, name="burst-balance.json"):
    return json.loads((state_dir / name).read_text())


def test_the_newest_datapoint_of_the_volume_is_written_for_the_guard(settings, endpoint, capsys):
    put(endpoint, VOLUME, 8.0, minutes_ago=5)
    put(endpoint, VOLUME, 41.5, minutes_ago=1)
    put(endpoint, "vol-0fffffffffffffff0", 99.0, minutes_ago=0)  # another volume: not ours
    put(endpoint, VOLUME, 77.0, minutes_ago=40)  # older than the 20 minutes asked for
    assert load("guard", "shoestring_cloudwatch").main() == 0
    reading = written(settings)
    assert reading["volume_id"] == VOLUME
    assert reading["percent"] == 41.5
    assert reading["error"] is None
    assert 0 < reading["asked_at"] - reading["datapoint_at"] < 180
    assert (settings / "burst-balance.json").stat().st_mode & 0o777 == 0o644
    assert f"BurstBalance of {VOLUME} 41.5%" in capsys.readouterr().out


def test_on_gp3_the_instance_s_ebsiobalance_is_written_for_the_guard(
    settings, endpoint, monkeypatch, capsys
):
    monkeypatch.delenv("CLOUDWATCH_VOLUME_ID")
    monkeypatch.setenv("CLOUDWATCH_INSTANCE_ID", INSTANCE)
    put_metric(endpoint, ("AWS/EC2", "EBSIOBalance%", "InstanceId", INSTANCE), 63.0, 2)
    # Newer, and not ours: another namespace, metric or instance, and the volume's BurstBalance.
    put_metric(endpoint, ("AWS/EBS", "EBSIOBalance%", "InstanceId", INSTANCE), 1.0, 0)
    put_metric(endpoint, ("AWS/EC2", "EBSByteBalance%", "InstanceId", INSTANCE), 2.0, 0)
    put_metric(endpoint, ("AWS/EC2", "EBSIOBalance%", "InstanceId", "i-0fffffffffffffff0"), 3.0, 0)
    put(endpoint, VOLUME, 4.0, minutes_ago=0)
    assert load("guard", "shoestring_cloudwatch").main() == 0
    reading = written(settings)
    assert (reading["instance_id"], reading["metric"], reading["percent"]) == (
        INSTANCE,
        "EBSIOBalance%",
        63.0,
    )
    assert "volume_id" not in reading
    assert f"EBSIOBalance% of {INSTANCE} 63.0%" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setting", "value", "asked", "file"),
    [
        ("CLOUDWATCH_VOLUME_ID", VOLUME, ("AWS/EBS", "BurstBalance", "VolumeId"), "burst-balance"),
        (
            "CLOUDWATCH_INSTANCE_ID",
            INSTANCE,
            ("AWS/EC2", "EBSIOBalance%", "InstanceId"),
            "burst-balance",
        ),
        (
            "CLOUDWATCH_CPU_INSTANCE_ID",
            INSTANCE,
            ("AWS/EC2", "CPUCreditBalance", "InstanceId"),
            "cpu-credit-balance",
        ),
    ],
    ids=["gp2-volume", "gp3-instance", "cpu-credits-of-the-instance"],
)
def test_the_id_the_unit_is_given_picks_the_metric_asked_for(
    settings, monkeypatch, setting, value, asked, file
):
    cloudwatch = load("guard", "shoestring_cloudwatch")
    monkeypatch.delenv("CLOUDWATCH_VOLUME_ID")
    monkeypatch.setenv(setting, value)
    client = boto3.client("cloudwatch", region_name="us-east-1")
    monkeypatch.setattr(cloudwatch.boto3, "client", lambda *args, **kwargs: client)
    namespace, name, dimension = asked
    with Stubber(client) as stub:
        stub.add_response(
            "get_metric_statistics",
            {"Datapoints": []},
            {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": dimension, "Value": value}],
                "StartTime": ANY,
                "EndTime": ANY,
                "Period": 60,
                "Statistics": ["Minimum"],
            },
        )
        assert cloudwatch.main() == 0
        stub.assert_no_pending_responses()
    assert written(settings, f"{file}.json")["metric"] == name
    assert [path.name for path in settings.iterdir()] == [f"{file}.json"]


def test_without_an_id_the_unit_fails_naming_each(settings, monkeypatch):
    monkeypatch.delenv("CLOUDWATCH_VOLUME_ID")
    with pytest.raises(
        SystemExit,
        match="none of CLOUDWATCH_VOLUME_ID, CLOUDWATCH_INSTANCE_ID, CLOUDWATCH_CPU_INSTANCE_ID",
    ):
        load("guard", "shoestring_cloudwatch").main()


def test_no_datapoint_yet_is_no_error(settings, monkeypatch, capsys):
    monkeypatch.setenv("CLOUDWATCH_VOLUME_ID", "vol-0aaaaaaaaaaaaaaa0")
    assert load("guard", "shoestring_cloudwatch").main() == 0
    reading = written(settings)
    assert (reading["percent"], reading["datapoint_at"], reading["error"]) == (None, None, None)
    assert "no BurstBalance datapoint" in capsys.readouterr().out


def access_denied(cloudwatch, monkeypatch, times):
    """The reader's CloudWatch client refuses its next `times` calls as IAM would."""
    client = boto3.client("cloudwatch", region_name="us-east-1")
    monkeypatch.setattr(cloudwatch.boto3, "client", lambda *args, **kwargs: client)
    stub = Stubber(client)
    for _ in range(times):
        stub.add_client_error(
            "get_metric_statistics",
            service_error_code="AccessDenied",
            service_message="not authorized to perform: cloudwatch:GetMetricStatistics",
            http_status_code=403,
        )
    return stub


def test_a_profile_that_may_not_ask_fails_the_unit_and_says_why(settings, monkeypatch):
    cloudwatch = load("guard", "shoestring_cloudwatch")
    with access_denied(cloudwatch, monkeypatch, 1):
        assert cloudwatch.main() == 1
    error = written(settings)["error"]
    assert "refused GetMetricStatistics (AccessDenied)" in error
    assert "must allow cloudwatch:GetMetricStatistics" in error


def test_an_endpoint_that_does_not_answer_fails_the_unit(settings, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("CLOUDWATCH_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert load("guard", "shoestring_cloudwatch").main() == 1
    assert written(settings)["error"].startswith("CloudWatch unreachable")


def reading_file(path, percent, datapoint_at, error=None):
    path.write_text(
        json.dumps(
            {
                "asked_at": datapoint_at + 30 if datapoint_at else 0,
                "volume_id": VOLUME,
                "percent": percent,
                "datapoint_at": datapoint_at,
                "error": error,
            }
        )
    )


def test_the_guard_resets_its_model_once_per_new_datapoint(tmp_path):
    guard = load("guard", "shoestring_guard")
    path = tmp_path / "burst-balance.json"
    cloudwatch = guard.CloudWatchBalance(str(path))
    assert cloudwatch.poll() is None, "no file yet: the timer has not run"
    reading_file(path, 12.0, 1000.0)
    assert cloudwatch.poll() == 12.0
    assert cloudwatch.poll() is None, "the same datapoint again"
    reading_file(path, 97.0, 1060.0)
    assert cloudwatch.poll() == 97.0
    reading_file(path, 5.0, 1000.0)
    assert cloudwatch.poll() is None, "an older datapoint than the one applied"

    volume = guard.Volume.from_env()
    volume.resync(12.0)
    assert volume.balance_percent() == pytest.approx(12.0)
    assert volume.credits == pytest.approx(0.12 * 5.4e6)


def test_the_guard_says_once_when_cloudwatch_cannot_be_asked(tmp_path, capsys):
    guard = load("guard", "shoestring_guard")
    path = tmp_path / "burst-balance.json"
    cloudwatch = guard.CloudWatchBalance(str(path))
    reading_file(path, None, None, error="CloudWatch refused GetMetricStatistics (AccessDenied)")
    assert cloudwatch.poll() is None
    assert cloudwatch.poll() is None
    reading_file(path, 44.0, 2000.0)
    assert cloudwatch.poll() == 44.0
    out = capsys.readouterr().out
    assert out.count("refused GetMetricStatistics (AccessDenied); going on with the model") == 1
    assert out.count("CloudWatch answers again") == 1


def test_without_a_volume_id_the_guard_reads_nothing():
    cloudwatch = load("guard", "shoestring_guard").CloudWatchBalance("")
    assert cloudwatch.poll() is None
    assert cloudwatch.describe() == "CloudWatch not asked (no volume id)"


def test_on_gp3_cloudwatch_s_ebsiobalance_resets_the_instance_s_bucket(tmp_path):
    guard = load("guard", "shoestring_guard")
    path = tmp_path / "burst-balance.json"
    cloudwatch = guard.CloudWatchBalance(str(path), "gp3")
    assert cloudwatch.describe() == f"CloudWatch's EBSIOBalance% from {path}"
    assert guard.CloudWatchBalance("", "gp3").describe() == "CloudWatch not asked (no instance id)"
    reading_file(path, 12.0, 1000.0)
    volume = guard.Volume(
        "gp3",
        20,
        gp2_min_iops=100,
        gp2_iops_per_gib=3,
        gp2_burst_iops=3000,
        gp2_credits=5.4e6,
        gp3_iops=3000,
    )
    assert volume.balance_percent() == 100.0, "the model alone: full, the instance's bucket"
    volume.resync(cloudwatch.poll())
    assert volume.balance_percent() == pytest.approx(12.0)
    assert volume.credits == pytest.approx(0.12 * 10_800 * 30 * 60)


# The instance's CPU credits (AWS/EC2 CPUCreditBalance, a count of credits), beside the disk's.


def test_the_instance_s_cpu_credit_balance_is_written_and_resets_the_guard_s_bank(
    settings, endpoint, monkeypatch, capsys
):
    instance = "i-0c0c0c0c0c0c0c0c0"
    monkeypatch.delenv("CLOUDWATCH_VOLUME_ID")
    monkeypatch.setenv("CLOUDWATCH_CPU_INSTANCE_ID", instance)
    put_cpu_credits(endpoint, instance, 380.0, minutes_ago=8)
    put_cpu_credits(endpoint, instance, 412.5, minutes_ago=3)
    put_cpu_credits(endpoint, instance, 576.0, minutes_ago=30)  # older than the 20 minutes
    # Newer, and not ours: another metric, instance or namespace.
    put_cpu_credits(endpoint, instance, 5.0, minutes_ago=0, name="CPUSurplusCreditBalance")
    put_cpu_credits(endpoint, "i-0fffffffffffffff0", 6.0, minutes_ago=0)
    put_metric(endpoint, ("AWS/EBS", "CPUCreditBalance", "InstanceId", instance), 7.0, 0, "Count")
    assert load("guard", "shoestring_cloudwatch").main() == 0
    reading = written(settings, "cpu-credit-balance.json")
    assert (reading["instance_id"], reading["metric"], reading["credits"]) == (
        instance,
        "CPUCreditBalance",
        412.5,
    )
    assert reading["error"] is None
    assert "percent" not in reading
    assert 0 < reading["asked_at"] - reading["datapoint_at"] < 300
    assert (settings / "cpu-credit-balance.json").stat().st_mode & 0o777 == 0o644
    assert not (settings / "burst-balance.json").exists(), "no disk id: no disk reading"
    assert f"CPUCreditBalance of {instance} 412.5 credits" in capsys.readouterr().out

    guard = load("guard", "shoestring_guard")
    bank = guard.CpuCredits(baseline_vcpu=0.4, credits_max=576.0)
    cloudwatch = guard.CloudWatchBalance(str(settings / "cpu-credit-balance.json"), "cpu")
    cloudwatch.reset(bank)
    assert bank.credits == 412.5
    assert "guard: CPU credits reset to CloudWatch's 412.5 credits" in capsys.readouterr().out
    bank.spend(2.0, 60)
    cloudwatch.reset(bank)
    assert bank.credits == pytest.approx(412.5 - 1.6), "the same datapoint is applied once"


def test_on_gp3_one_run_writes_the_instance_s_ebs_balance_and_its_cpu_credits(
    settings, endpoint, monkeypatch
):
    instance = "i-0d0d0d0d0d0d0d0d0"
    monkeypatch.delenv("CLOUDWATCH_VOLUME_ID")
    monkeypatch.setenv("CLOUDWATCH_INSTANCE_ID", instance)
    monkeypatch.setenv("CLOUDWATCH_CPU_INSTANCE_ID", instance)
    put_metric(endpoint, ("AWS/EC2", "EBSIOBalance%", "InstanceId", instance), 63.0, 2)
    put_cpu_credits(endpoint, instance, 201.0, minutes_ago=2)
    assert load("guard", "shoestring_cloudwatch").main() == 0
    disk = written(settings)
    cpu = written(settings, "cpu-credit-balance.json")
    assert (disk["metric"], disk["percent"]) == ("EBSIOBalance%", 63.0)
    assert (cpu["metric"], cpu["credits"]) == ("CPUCreditBalance", 201.0)


def test_a_profile_that_may_not_ask_fails_each_reading(settings, monkeypatch):
    cloudwatch = load("guard", "shoestring_cloudwatch")
    monkeypatch.setenv("CLOUDWATCH_CPU_INSTANCE_ID", INSTANCE)
    with access_denied(cloudwatch, monkeypatch, 2) as stub:
        assert cloudwatch.main() == 1
        stub.assert_no_pending_responses()
    for name in ("burst-balance.json", "cpu-credit-balance.json"):
        assert "must allow cloudwatch:GetMetricStatistics" in written(settings, name)["error"]


def test_the_guard_says_once_when_cloudwatch_cannot_be_asked_for_the_cpu_credits(tmp_path, capsys):
    guard = load("guard", "shoestring_guard")
    path = tmp_path / "cpu-credit-balance.json"
    cloudwatch = guard.CloudWatchBalance(str(path), "cpu")
    assert cloudwatch.describe() == f"CloudWatch's CPUCreditBalance from {path}"
    assert guard.CloudWatchBalance("", "cpu").describe() == "CloudWatch not asked (no instance id)"
    path.write_text(
        json.dumps(
            {"credits": None, "datapoint_at": None, "error": "CloudWatch unreachable: timed out"}
        )
    )
    assert cloudwatch.poll() is None
    assert cloudwatch.poll() is None
    path.write_text(json.dumps({"credits": 88.0, "datapoint_at": 3000.0, "error": None}))
    assert cloudwatch.poll() == 88.0
    out = capsys.readouterr().out
    assert out.count("unreachable: timed out; going on with the modelled CPU credits alone") == 1
    assert out.count("CloudWatch answers again (CPUCreditBalance)") == 1
    path.write_text(json.dumps({"percent": 12.0, "datapoint_at": 4000.0, "error": None}))
    assert cloudwatch.poll() is None, "a percent is the disk's figure, not credits"
