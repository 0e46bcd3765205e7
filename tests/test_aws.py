"""playbooks/aws/provision.yml and destroy.yml against moto_server on loopback: provision
twice (the second run changes nothing), read every resource back with boto3, find the host
through the generated amazon.aws.aws_ec2 inventory, then destroy and find nothing left but
the backup bucket and the final snapshot. Bad settings stop the play before any call to AWS.

Moto is changed here, never the play, where it differs from AWS (LESSONS.md, "AWS, measured
against moto"): moto tags an Elastic IP as "vpc-elastic-ip" where AWS says "elastic-ip", so
amazon.aws.ec2_eip never finds its own tags and re-tags every run; and moto has no Debian
images, so the test makes one named as Debian names theirs, under moto's account; and moto
forgets the CPU credit mode an instance is launched with, so the test records what the play
asked for."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import yaml
from moto.ec2 import utils as moto_ec2_utils
from moto.ec2.responses.instances import InstanceResponse

from tests.moto_server import moto_endpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NAME = "st-test"
REGION = "us-east-1"
ADMIN_V4 = "198.51.100.7/32"
ADMIN_V6 = "2001:db8:1::/64"
ZONE = "example.test"
DOMAIN = f"shoestring.{ZONE}"
QUEUES = ["interactive", "bulk", "maintenance"]
# The CPU credit mode each RunInstances asked for, by the instance's Name tag: moto
# accepts CreditSpecification and forgets it (it describes every instance as "standard").
CREDITS_ASKED = {}


def recording_run_instances(run_instances):
    def run(self):
        tags = self._parse_tag_specification().get("instance", {})
        CREDITS_ASKED[tags.get("Name")] = (self._get_param("CreditSpecification") or {}).get(
            "CpuCredits"
        )
        return run_instances(self)

    return run


@pytest.fixture(scope="module")
def endpoint():
    """moto_server on loopback, made to answer as AWS does where the play depends on it."""
    run_instances = InstanceResponse.run_instances
    InstanceResponse.run_instances = recording_run_instances(run_instances)
    moto_ec2_utils.EC2_PREFIX_TO_RESOURCE["eipalloc"] = "elastic-ip"
    try:
        with moto_endpoint() as url:
            yield url
    finally:
        InstanceResponse.run_instances = run_instances
        moto_ec2_utils.EC2_PREFIX_TO_RESOURCE["eipalloc"] = "vpc-elastic-ip"


@pytest.fixture(scope="module")
def aws_env(endpoint):
    return dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )


@pytest.fixture(scope="module")
def client(endpoint, aws_env):
    def make(service):
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    return make


def make_image(ec2, name):
    """An x86_64 image named as Debian names theirs, under moto's account."""
    source = ec2.describe_images(Filters=[{"Name": "architecture", "Values": ["x86_64"]}])[
        "Images"
    ][0]["ImageId"]
    builder = ec2.run_instances(ImageId=source, MinCount=1, MaxCount=1)["Instances"][0]
    ec2.create_image(InstanceId=builder["InstanceId"], Name=name)
    ec2.terminate_instances(InstanceIds=[builder["InstanceId"]])
    time.sleep(1.1)  # creation dates in whole seconds: the next image is newer


@pytest.fixture(scope="module")
def settings(tmp_path_factory, endpoint, client):
    """The operator's variables: a fresh key pair, the admin's addresses, the test image."""
    home = tmp_path_factory.mktemp("aws")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "key")], check=True
    )
    for day in ["20261101-1", "20261201-2"]:  # the newer one must be chosen
        make_image(client("ec2"), f"debian-12-amd64-{day}")
    # The operator's settings beside the generated file, as in inventory/aws.
    shutil.copytree(REPO / "inventory" / "aws", home / "inventory")
    client("route53").create_hosted_zone(Name=f"{ZONE}.", CallerReference=NAME)
    return {
        "aws_name": NAME,
        "aws_region": REGION,
        "aws_admin_cidrs": [ADMIN_V4, ADMIN_V6],
        "aws_ssh_public_key_file": str(home / "key.pub"),
        "aws_ssh_private_key_file": str(home / "key"),
        "aws_ami_owner": "123456789012",
        "aws_endpoint_url": endpoint,
        "aws_inventory_dir": str(home / "inventory"),
        "aws_alarm_email": "ops@example.org",
        "aws_domain": DOMAIN,
        "aws_route53_zone": ZONE,
    }


def ansible(aws_env, *command):
    """An Ansible command from the repository, with moto's credentials; its wall time too."""
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO, env=aws_env, capture_output=True, text=True, timeout=600
    )
    result.wall_s = time.monotonic() - started
    return result


def playbook(aws_env, name, variables):
    return ansible(
        aws_env, "ansible-playbook", f"playbooks/aws/{name}.yml", "-e", json.dumps(variables)
    )


def recap(result):
    """The PLAY RECAP's counts for localhost."""
    line = re.search(r"^localhost\s+:(.*)$", result.stdout, re.MULTILINE)
    assert line, result.stdout[-3000:] + result.stderr[-3000:]
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line.group(1))}


@pytest.fixture(scope="module")
def provisioned(aws_env, settings, client):
    first = playbook(aws_env, "provision", settings)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    # Debian publishes a newer image meanwhile: the deployment keeps its one instance.
    make_image(client("ec2"), "debian-12-amd64-20261215-3")
    second = playbook(aws_env, "provision", settings)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    print(f"provision against moto: first run {first.wall_s:.1f} s, second {second.wall_s:.1f} s")
    return first, second


@pytest.fixture(scope="module")
def instance(provisioned, client):
    reservations = client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:shoestring:deployment", "Values": [NAME]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    instances = [item for reservation in reservations for item in reservation["Instances"]]
    assert len(instances) == 1, instances
    return instances[0]


def test_a_second_provision_changes_nothing(provisioned):
    first, second = provisioned
    assert recap(first)["changed"] > 0
    assert recap(second)["changed"] == 0, second.stdout[-6000:]


def test_ssh_only_from_the_admins_and_the_web_from_anywhere(instance, client):
    group_id = instance["SecurityGroups"][0]["GroupId"]
    group = client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert group["GroupName"] == NAME
    opened = set()
    for rule in group["IpPermissions"]:
        ports = (rule["IpProtocol"], rule["FromPort"], rule["ToPort"])
        opened |= {(*ports, r["CidrIp"]) for r in rule.get("IpRanges", [])}
        opened |= {(*ports, r["CidrIpv6"]) for r in rule.get("Ipv6Ranges", [])}
    assert opened == {
        ("tcp", 22, 22, ADMIN_V4),
        ("tcp", 22, 22, ADMIN_V6),
        ("tcp", 80, 80, "0.0.0.0/0"),
        ("tcp", 80, 80, "::/0"),
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("tcp", 443, 443, "::/0"),
    }


def test_the_instance_its_image_identity_and_metadata(instance, client):
    ec2 = client("ec2")
    image = ec2.describe_images(ImageIds=[instance["ImageId"]])["Images"][0]
    assert image["Name"] == "debian-12-amd64-20261201-2"
    assert instance["InstanceType"] == "t3.small"
    assert instance["KeyName"] == NAME
    assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{NAME}-instance")
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert CREDITS_ASKED[NAME] == "standard"
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert tags["shoestring:tiers"] == "database,web,workers,beat"


def test_two_encrypted_volumes_the_data_one_apart(instance, client):
    ids = {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]}
    assert "/dev/sdf" in ids
    assert len(ids) == 2
    volumes = {
        v["VolumeId"]: v
        for v in client("ec2").describe_volumes(VolumeIds=list(ids.values()))["Volumes"]
    }
    data = volumes[ids.pop("/dev/sdf")]
    (root,) = (volumes[volume_id] for volume_id in ids.values())
    assert (data["VolumeType"], data["Size"], data["Encrypted"]) == ("gp3", 20, True)
    assert (root["VolumeType"], root["Size"], root["Encrypted"]) == ("gp3", 10, True)
    assert {"Key": "shoestring:deployment", "Value": NAME} in data["Tags"]


def test_an_elastic_ip_on_the_instance(instance, client):
    addresses = client("ec2").describe_addresses(
        Filters=[{"Name": "tag:shoestring:deployment", "Values": [NAME]}]
    )["Addresses"]
    assert [address["InstanceId"] for address in addresses] == [instance["InstanceId"]]


def a_records(client):
    route53 = client("route53")
    (zone,) = route53.list_hosted_zones_by_name(DNSName=f"{ZONE}.")["HostedZones"]
    records = route53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
    return {
        record["Name"]: [value["Value"] for value in record["ResourceRecords"]]
        for record in records
        if record["Type"] == "A"
    }


def test_the_domain_names_the_elastic_ip(instance, client):
    (address,) = client("ec2").describe_addresses(
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}]
    )["Addresses"]
    assert a_records(client) == {f"{DOMAIN}.": [address["PublicIp"]]}


def test_the_policy_allows_what_the_host_calls_on_its_own_resources(provisioned, client):
    iam = client("iam")
    role = iam.get_role(RoleName=f"{NAME}-instance")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }
    assert iam.list_role_policies(RoleName=f"{NAME}-instance")["PolicyNames"] == [
        f"{NAME}-instance"
    ]
    assert iam.list_attached_role_policies(RoleName=f"{NAME}-instance")["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName=f"{NAME}-instance", PolicyName=f"{NAME}-instance")[
        "PolicyDocument"
    ]
    statements = {s["Sid"]: s for s in document["Statement"]}
    assert all(s["Effect"] == "Allow" for s in statements.values())
    arn = f"arn:aws:sqs:{REGION}:123456789012:{NAME}-"
    assert statements["WorkQueues"]["Action"] == [
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ]
    assert statements["WorkQueues"]["Resource"] == [arn + queue for queue in QUEUES]
    assert statements["DeadLetterCounts"]["Action"] == ["sqs:GetQueueAttributes"]
    assert statements["DeadLetterCounts"]["Resource"] == [f"{arn}{q}-dead" for q in QUEUES]
    assert statements["BackupCopies"]["Action"] == ["s3:PutObject", "s3:AbortMultipartUpload"]
    assert statements["BackupCopies"]["Resource"] == (
        f"arn:aws:s3:::{NAME}-backups-123456789012/{NAME}/*"
    )
    # The one wildcard: GetMetricStatistics takes no resource-level permission.
    assert statements["ReadMetrics"] == {
        "Sid": "ReadMetrics",
        "Effect": "Allow",
        "Action": ["cloudwatch:GetMetricStatistics"],
        "Resource": "*",
    }
    assert set(statements) == {"WorkQueues", "DeadLetterCounts", "ReadMetrics", "BackupCopies"}
    for statement in statements.values():
        assert not any("*" in action for action in statement["Action"])


def test_each_queue_is_redriven_to_its_dead_letter_queue(provisioned, client):
    sqs = client("sqs")
    for queue in QUEUES:
        url = sqs.get_queue_url(QueueName=f"{NAME}-{queue}")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["VisibilityTimeout"] == "3600"
        assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:123456789012:{NAME}-{queue}-dead",
            "maxReceiveCount": 10,
        }
        dead = sqs.get_queue_url(QueueName=f"{NAME}-{queue}-dead")["QueueUrl"]
        retention = sqs.get_queue_attributes(
            QueueUrl=dead, AttributeNames=["MessageRetentionPeriod"]
        )["Attributes"]["MessageRetentionPeriod"]
        assert retention == "1209600"


def test_the_backup_bucket_is_encrypted_private_and_expiring(provisioned, client):
    s3 = client("s3")
    bucket = f"{NAME}-backups-123456789012"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    assert len(block) == 4
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rule["Expiration"]["Days"] == 30
    assert rule.get("Prefix", rule.get("Filter", {}).get("Prefix")) == f"{NAME}/"


def test_the_alarms_watch_the_budgets_and_page_the_operator(instance, client):
    topic = f"arn:aws:sns:{REGION}:123456789012:{NAME}-alarms"
    subscriptions = client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "ops@example.org")]
    alarms = {
        alarm["AlarmName"]: alarm
        for alarm in client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{NAME}-")[
            "MetricAlarms"
        ]
    }
    on_instance = [{"Name": "InstanceId", "Value": instance["InstanceId"]}]
    expected = {
        f"{NAME}-ebs-io-balance": ("AWS/EC2", "EBSIOBalance%", on_instance, "LessThan", 20),
        f"{NAME}-cpu-credit-balance": ("AWS/EC2", "CPUCreditBalance", on_instance, "LessThan", 30),
        f"{NAME}-system-status-check": (
            "AWS/EC2",
            "StatusCheckFailed_System",
            on_instance,
            "GreaterThanOrEqualTo",
            1,
        ),
    }
    for queue in QUEUES:
        expected[f"{NAME}-{queue}-dead-letters"] = (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            [{"Name": "QueueName", "Value": f"{NAME}-{queue}-dead"}],
            "GreaterThan",
            0,
        )
    assert set(alarms) == set(expected)
    for name, (namespace, metric, dimensions, comparison, threshold) in expected.items():
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == (namespace, metric), name
        assert alarm["Dimensions"] == dimensions, name
        assert alarm["ComparisonOperator"] == f"{comparison}Threshold", name
        assert alarm["Threshold"] == threshold, name
        assert topic in alarm["AlarmActions"], name
        assert alarm["OKActions"] == [topic], name
    recover = f"arn:aws:automate:{REGION}:ec2:recover"
    assert recover in alarms[f"{NAME}-system-status-check"]["AlarmActions"]


def test_the_inventory_finds_the_host_with_what_site_yml_needs(instance, settings, aws_env):
    inventory = Path(settings["aws_inventory_dir"]) / f"{NAME}.aws_ec2.yml"
    assert yaml.safe_load(inventory.read_text())["plugin"] == "amazon.aws.aws_ec2"
    found = inventory_list(inventory, aws_env)
    for group in ["database", "web", "workers", "beat"]:
        assert found[group]["hosts"] == [NAME], group
    host = found["_meta"]["hostvars"][NAME]
    address = client_address(instance, aws_env, settings)
    assert host["ansible_host"] == address
    assert host["ansible_user"] == "admin"
    assert host["ansible_become"] is True
    secrets = Path(settings["aws_inventory_dir"]).resolve().parent / "credentials" / f"aws-{NAME}"
    assert host["shoestring_secrets_dir"] == str(secrets)
    assert host["ansible_ssh_private_key_file"] == settings["aws_ssh_private_key_file"]
    assert host["shoestring_on_aws"] is True
    assert host["shoestring_sqs_queue_url_base"] == f"{settings['aws_endpoint_url']}/123456789012/"
    assert host["shoestring_sqs_queue_prefix"] == f"{NAME}-"
    assert host["workers_sqs_create_queues"] is False
    assert host["backup_s3_bucket"] == f"{NAME}-backups-123456789012"
    assert host["backup_s3_manage_bucket"] is False
    data = next(
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sdf"
    )
    serial = data.replace("-", "")
    assert (
        host["postgresql_data_device"]
        == f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial}"
    )
    assert host["guard_volume_type"] == "gp3"
    assert host["guard_volume_size_gib"] == 20
    assert host["guard_cloudwatch_instance_id"] == instance["InstanceId"]
    assert host["guard_cpu_credits"] is True  # standard mode: the guard watches the bank
    assert "guard_cloudwatch_volume_id" not in host
    # The operator's group_vars beside it make the Elastic IP a name the site answers to.
    shown = ansible(
        aws_env,
        *("ansible", NAME, "-i", settings["aws_inventory_dir"]),
        *("-m", "ansible.builtin.debug", "-a", "var=nginx_extra_names"),
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(rf"nginx_extra_names:\n *- {re.escape(address)}\n", shown.stdout), shown.stdout


def inventory_list(inventory, aws_env):
    """What ansible-inventory makes of the generated file (the plugin asks moto)."""
    listed = ansible(aws_env, "ansible-inventory", "-i", str(inventory), "--list")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))


def inventory_hosts(inventory, aws_env):
    return inventory_list(inventory, aws_env)["_meta"]["hostvars"]


def client_address(instance, aws_env, settings):
    ec2 = boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=settings["aws_endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (address,) = ec2.describe_addresses(
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}]
    )["Addresses"]
    return address["PublicIp"]


def test_gp2_and_unlimited_credits_watch_their_own_budgets(aws_env, settings, client):
    """A second deployment beside the first: a gp2 data volume has its own BurstBalance,
    and unlimited credits are watched for the surplus AWS bills."""
    variables = {**settings, "aws_name": "st-gp2", "aws_data_volume_type": "gp2"}
    variables.update(aws_cpu_credits="unlimited", aws_domain="", aws_route53_zone="")
    result = playbook(aws_env, "provision", variables)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    ec2 = client("ec2")
    (reservation,) = ec2.describe_instances(
        Filters=[
            {"Name": "tag:shoestring:deployment", "Values": ["st-gp2"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    (instance,) = reservation["Instances"]
    assert CREDITS_ASKED["st-gp2"] == "unlimited"
    data = next(
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sdf"
    )
    assert ec2.describe_volumes(VolumeIds=[data])["Volumes"][0]["VolumeType"] == "gp2"
    alarms = {
        alarm["AlarmName"]: alarm
        for alarm in client("cloudwatch").describe_alarms(AlarmNamePrefix="st-gp2-")["MetricAlarms"]
    }
    burst = alarms["st-gp2-data-volume-burst-balance"]
    assert (burst["Namespace"], burst["MetricName"]) == ("AWS/EBS", "BurstBalance")
    assert burst["Dimensions"] == [{"Name": "VolumeId", "Value": data}]
    surplus = alarms["st-gp2-cpu-surplus-credits"]
    assert surplus["MetricName"] == "CPUSurplusCreditBalance"
    assert surplus["ComparisonOperator"] == "GreaterThanThreshold"
    assert "st-gp2-ebs-io-balance" not in alarms
    assert "st-gp2-cpu-credit-balance" not in alarms
    inventory = Path(settings["aws_inventory_dir"]) / "st-gp2.aws_ec2.yml"
    host = inventory_hosts(inventory, aws_env)["st-gp2"]
    assert host["guard_volume_type"] == "gp2"
    assert host["guard_cloudwatch_volume_id"] == data
    assert "guard_cloudwatch_instance_id" not in host
    assert host["guard_cpu_credits"] is False  # unlimited mode bills instead of holding
    # Two deployments in one inventory: each host's tiers are its own deployment's hosts,
    # not the first database or beat host of the whole inventory.
    shown = ansible(
        aws_env,
        *("ansible", "all", "-i", settings["aws_inventory_dir"], "--playbook-dir", str(REPO)),
        *("-m", "ansible.builtin.debug"),
        *("-a", "msg={{ shoestring_database_host }}/{{ shoestring_tiers.beat | join(',') }}"),
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name in [NAME, "st-gp2"]:
        shown_for = re.search(rf"^{name} \| SUCCESS => *\n *msg: (\S+)$", shown.stdout, re.M)
        assert shown_for, shown.stdout
        assert shown_for.group(1) == f"{name}/{name}", shown.stdout
    gone = playbook(aws_env, "destroy", {**variables, "aws_destroy_confirm": "st-gp2"})
    assert gone.returncode == 0, gone.stdout[-4000:]


# Each bad value, and what the refusal must say about it (the variable and the value).
BAD_SETTINGS = [
    pytest.param({"aws_admin_cidrs": []}, "aws_admin_cidrs must list the CIDRs", id="no-admin"),
    pytest.param(
        {"aws_admin_cidrs": ["0.0.0.0/0"]},
        "(got ['0.0.0.0/0']); 0.0.0.0/0 or ::/0 opens ssh to the whole internet",
        id="open",
    ),
    pytest.param({"aws_admin_cidrs": ["10.0.0.300/8"]}, "(got ['10.0.0.300/8'])", id="not-a-cidr"),
    pytest.param({"aws_name": "Shoestring_Prod"}, "(got 'Shoestring_Prod')", id="bad-name"),
    pytest.param({"aws_region": "us-gov-west-1"}, "(got 'us-gov-west-1')", id="gov-region"),
    pytest.param({"aws_instance_type": "c6i.large"}, "(got 'c6i.large')", id="unknown-type"),
    pytest.param(
        {"aws_cpu_credits": "maybe"},
        "value of aws_cpu_credits must be one of: standard, unlimited, got: maybe",
        id="credits",
    ),
    pytest.param(
        {"aws_data_volume_type": "io2"},
        "value of aws_data_volume_type must be one of: gp3, gp2, got: io2",
        id="volume-type",
    ),
    pytest.param(
        {"aws_domain": "x.example.org"},
        f"the domain inside the zone (got 'x.example.org' in '{ZONE}')",
        id="domain-outside-zone",
    ),
    pytest.param({"aws_ssh_public_key_file": "/nonexistent"}, "got '/nonexistent'", id="key"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_SETTINGS)
def test_a_bad_setting_stops_before_any_call_to_aws(bad, named, aws_env, settings, client):
    variables = {**settings, "aws_name": "st-bad", **bad}
    result = playbook(aws_env, "provision", variables)
    assert result.returncode != 0, result.stdout[-3000:]
    said = re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert named in said, said[-3000:]
    assert "Ask AWS which account" not in result.stdout
    assert "Find the deployment's IAM role" not in result.stdout
    groups = client("ec2").describe_security_groups()["SecurityGroups"]
    assert variables["aws_name"] not in [group["GroupName"] for group in groups]


def test_destroy_refuses_without_the_confirmation(provisioned, aws_env, settings, client):
    result = playbook(aws_env, "destroy", {**settings, "aws_destroy_confirm": "yes"})
    assert result.returncode != 0
    assert "aws_destroy_confirm" in result.stdout
    assert client("sqs").get_queue_url(QueueName=f"{NAME}-bulk")["QueueUrl"]


def test_the_same_name_in_another_region_is_refused(provisioned, aws_env, settings, client):
    """IAM is global: the role must never be taken over from another region, nor removed."""
    for name in ["provision", "destroy"]:
        variables = {**settings, "aws_region": "eu-west-1", "aws_destroy_confirm": NAME}
        result = playbook(aws_env, name, variables)
        assert result.returncode != 0, name
        said = re.sub(r"\s+", " ", result.stdout)
        assert f"the deployment '{NAME}' lives in {REGION}, not in aws_region eu-west-1" in said
    assert client("iam").get_role(RoleName=f"{NAME}-instance")["Role"]
    document = client("iam").get_role_policy(
        RoleName=f"{NAME}-instance", PolicyName=f"{NAME}-instance"
    )["PolicyDocument"]
    assert f":sqs:{REGION}:" in json.dumps(document)


def test_a_new_instance_type_needs_a_restart_allowed(instance, aws_env, settings):
    result = playbook(aws_env, "provision", {**settings, "aws_instance_type": "t3.medium"})
    assert result.returncode != 0
    assert "Set aws_allow_restart=true to do it" in re.sub(r"\s+", " ", result.stdout)
    assert "The instance - encrypted" not in result.stdout


def test_destroy_leaves_the_bucket_and_a_final_snapshot_only(instance, aws_env, settings, client):
    # Only the name, the confirmation and where things are: the rest is on the tags.
    variables = {
        key: settings[key]
        for key in ["aws_name", "aws_region", "aws_endpoint_url", "aws_inventory_dir"]
    }
    result = playbook(aws_env, "destroy", {**variables, "aws_destroy_confirm": NAME})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    print(f"destroy against moto: {result.wall_s:.1f} s")
    ec2 = client("ec2")
    tagged = {"Name": "tag:shoestring:deployment", "Values": [NAME]}
    states = [
        item["State"]["Name"]
        for reservation in ec2.describe_instances(Filters=[tagged])["Reservations"]
        for item in reservation["Instances"]
    ]
    assert set(states) <= {"terminated"}
    assert ec2.describe_addresses(Filters=[tagged])["Addresses"] == []
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [NAME]}])[
            "SecurityGroups"
        ]
        == []
    )
    assert (
        ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [NAME]}])["KeyPairs"] == []
    )
    live = [v for v in ec2.describe_volumes(Filters=[tagged])["Volumes"] if v["State"] != "deleted"]
    assert live == []
    queues = client("sqs").list_queues(QueueNamePrefix=NAME).get("QueueUrls", [])
    assert queues == []
    assert client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{NAME}-")["MetricAlarms"] == []
    topics = [t["TopicArn"] for t in client("sns").list_topics()["Topics"]]
    assert not [topic for topic in topics if topic.endswith(f":{NAME}-alarms")]
    iam = client("iam")
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"] == f"{NAME}-instance"]
    profiles = iam.list_instance_profiles()["InstanceProfiles"]
    assert not [p for p in profiles if p["InstanceProfileName"] == f"{NAME}-instance"]
    assert not (Path(settings["aws_inventory_dir"]) / f"{NAME}.aws_ec2.yml").exists()
    assert a_records(client) == {}
    # What stays: the backups, and the data volume as it was.
    assert client("s3").head_bucket(Bucket=f"{NAME}-backups-123456789012")
    data = next(
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sdf"
    )
    (snapshot,) = ec2.describe_snapshots(
        Filters=[{"Name": "tag:shoestring:final-snapshot-of", "Values": [NAME]}]
    )["Snapshots"]
    assert snapshot["VolumeId"] == data
