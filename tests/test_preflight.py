"""Bad settings fail in the preflight play, before any tier changes anything.

site.yml runs against this machine through a local connection. The bad-value
runs use --check as a safety net only: it is the preflight's asserts and
argument specs that stop them, which the output shows (no tier play starts).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


ONE_BOX = ["database", "web", "workers", "beat"]


def write_inventory(tmp_path, groups, secrets_from=None):
    """This machine in each of `groups` (a list: as the one host preflight-target; a dict:
    group -> host names, each of them this machine), with a copy of a deployment's secrets
    beside it (secrets_from)."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "memory_budget_total_mb": 2048,
    }
    if not isinstance(groups, dict):
        groups = {group: ["preflight-target"] for group in groups}
    children = {group: {"hosts": {name: host for name in names}} for group, names in groups.items()}
    inventory_dir = tmp_path / "inventory" / "preflight"
    inventory_dir.mkdir(parents=True)
    (inventory_dir / "hosts.json").write_text(json.dumps({"all": {"children": children}}))
    secrets = tmp_path / "inventory" / "credentials" / "preflight"
    if secrets_from is not None:
        shutil.copytree(secrets_from, secrets)
    return inventory_dir


@pytest.fixture(scope="session")
def made_secrets(tmp_path_factory):
    """A deployment that ran before: what playbooks/secrets.yml makes the first time (the OAuth
    client key, the deployment's CA), a change on the controller these runs need not repeat.
    Made once, by the play itself; each test gets a copy."""
    base = tmp_path_factory.mktemp("made")
    result = run_playbook(write_inventory(base, ONE_BOX), "playbooks/secrets.yml", {})
    assert result.returncode == 0, result.stdout + result.stderr
    return base / "inventory" / "credentials" / "preflight"


@pytest.fixture
def inventory(tmp_path, made_secrets):
    return write_inventory(tmp_path, ONE_BOX, made_secrets)


def run_playbook(inventory, playbook, extra_vars, *options):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            str(inventory),
            playbook,
            "-e",
            json.dumps(extra_vars),
            *options,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


BAD_SETTINGS = [
    pytest.param(
        {"base_firewall_allowed_sources": [{"port": 5432, "addresses": ["db.example.org"]}]},
        ["base_firewall_allowed_sources must hold ports 1-65535", "db.example.org"],
        id="firewall-source-not-an-address",
    ),
    pytest.param(
        {"app_database_sslmode": "sometimes"},
        ["app_database_sslmode", "sometimes", "one of"],
        id="database-sslmode-not-a-choice",
    ),
    pytest.param(
        {"swap_size_mb": "lots"}, ["swap_size_mb", "'lots'", "int"], id="swap-size-not-a-number"
    ),
    pytest.param(
        {"postgresql_synchronous_commit": "maybe"},
        ["postgresql_synchronous_commit", "maybe", "one of"],
        id="synchronous-commit-not-a-choice",
    ),
    pytest.param(
        {"nginx_domain": "shoestring.example.org"},
        ["nginx_domain and nginx_acme_email go together"],
        id="domain-without-acme-email",
    ),
    pytest.param(
        {
            "shoestring_demo_network": True,
            "fakesky_enabled": False,
            "nginx_domain": "shoestring.example.org",
            "nginx_acme_email": "ops@example.org",
        },
        ["the demo network", "must never run on a production host"],
        id="demo-network-on-a-production-host",
    ),
    pytest.param(
        {
            "fakesky_enabled": True,
            "nginx_domain": "shoestring.example.org",
            "nginx_acme_email": "ops@example.org",
        },
        ["installs a fake Bluesky", "a production host"],
        id="fake-network-on-a-production-host",
    ),
    pytest.param(
        {"nginx_acme_server": "http://acme.example.org/directory"},
        ["nginx_acme_server an https:// ACME directory URL", "http://acme.example.org"],
        id="acme-server-without-tls",
    ),
    pytest.param(
        {"app_signin_failure_limit": 0},
        ["app_signin_failure_limit and", "app_signin_cooloff_min >= 1"],
        id="sign-in-never-refused",
    ),
    pytest.param(
        {"nginx_signin_per_minute": 0},
        ["nginx_signin_per_minute >= 1", "got 0"],
        id="password-forms-never-let-through",
    ),
    pytest.param(
        {"nginx_extra_names": ["https://shoestring.example.org:443"]},
        ["nginx_extra_names a list of lower-case host names"],
        id="extra-name-with-a-scheme",
    ),
    pytest.param(
        {"postgresql_fsync": False},
        ["postgresql_fsync and postgresql_full_page_writes must stay true", "corrupt"],
        id="fsync-off",
    ),
    pytest.param(
        {"postgresql_full_page_writes": False},
        ["postgresql_fsync and postgresql_full_page_writes must stay true"],
        id="full-page-writes-off",
    ),
    pytest.param(
        {"memory_budget_overrides_mb": {"celery_bulk": 1500}},
        ["memory budget over-committed", "celery_bulk (1500 MiB asked"],
        id="memory-over-committed",
    ),
    pytest.param(
        {"workers_lifetime": "forever"},
        ["workers_lifetime,", "got forever"],
        id="worker-lifetime-not-a-duration",
    ),
    pytest.param(
        {"workers_block_batch_size": 500},
        # The web app's copy (app_block_batch_size) is checked first and names both.
        ["workers_block_batch_size", "1-200", "got 500"],
        id="block-batch-over-the-networks-limit",
    ),
    pytest.param(
        {"workers_follower_page_size": 50},
        # The web app's copy (app_follower_page_size) is checked first and names both.
        ["workers_follower_page_size", "100-10000", "got 50"],
        id="follower-page-smaller-than-one-call",
    ),
    pytest.param(
        {"workers_follower_page_delay_s": 7200},
        # The web app's copy (app_follower_page_delay_s) is checked first and names both.
        ["workers_follower_page_delay_s", "0-3600", "got 7200"],
        id="follower-page-delay-over-an-hour",
    ),
    pytest.param(
        {"workers_watch_poll_s": 5},
        ["workers_watch_poll_s 10-3600", "got 5 and 21600"],
        id="watch-poll-hammering-the-network",
    ),
    pytest.param(
        {"workers_watch_poll_s": 600, "workers_watch_rescan_s": 60},
        ["workers_watch_rescan_s from it to 604800", "got 600 and 60"],
        id="watch-rescan-more-often-than-the-poll",
    ),
    pytest.param(
        {"workers_follower_page_release": "cron"},
        ["workers_follower_page_release", "cron", "one of"],
        id="page-release-not-a-choice",
    ),
    pytest.param(
        {"redis_appendfsync": "sometimes"},
        ["redis_appendfsync", "sometimes", "one of"],
        id="broker-fsync-not-a-choice",
    ),
    pytest.param(
        {"release_keep": 1},
        ["release_keep must be at least 2", "got 1"],
        id="no-release-to-roll-back-to",
    ),
    pytest.param(
        {
            "workers_pools": [
                {
                    "name": "bulk",
                    "queues": ["bulk"],
                    "concurrency": 2,
                    "network": True,
                    "grace": "soon",
                }
            ]
        },
        ["each pool's lifetime and grace", "bulk:"],
        id="pool-grace-not-a-duration",
    ),
    pytest.param(
        {"redis_bind": ["10.0.0.5"]},
        ["redis_bind loopback addresses only"],
        id="broker-on-the-network",
    ),
    pytest.param(
        {"base_firewall_allowed_tcp_ports": [80, 443]},
        ["base_firewall_allowed_tcp_ports", "include 22"],
        id="firewall-without-ssh",
    ),
    pytest.param(
        {"fakesky_enabled": True, "fakesky_port": 80},
        ["fakesky_port must be an unprivileged port", "got 80"],
        id="fake-network-on-a-privileged-port",
    ),
    pytest.param(
        {"backup_keep_days": 0},
        ["backup_keep_days must be >= 1", "got 0"],
        id="backups-kept-no-days",
    ),
    pytest.param(
        {"backup_on_calendar": "whenever"},
        ["backup_on_calendar must be a systemd OnCalendar expression", "got 'whenever'"],
        id="backup-calendar-systemd-cannot-read",
    ),
    pytest.param(
        {"backup_s3_bucket": "My_Bucket"},
        ["backup_s3_bucket empty or an S3 bucket name", "'My_Bucket'"],
        id="backup-bucket-not-a-bucket-name",
    ),
    pytest.param(
        {"status_disk_used_warn_percent": 150},
        ["status_disk_used_warn_percent must be 1-100", "got 150"],
        id="status-disk-threshold-over-100",
    ),
    pytest.param(
        {"guard_pause_below_percent": 60, "guard_resume_above_percent": 50},
        ["guard_resume_above_percent must be above", "got 50 and 60"],
        id="guard-resumes-below-its-pause-threshold",
    ),
    pytest.param(
        {"guard_cpu_pause_below_credits": 200, "guard_cpu_resume_above_credits": 100},
        ["guard_cpu_resume_above_credits above it", "got 200 and 100"],
        id="guard-cpu-resumes-below-its-pause-threshold",
    ),
    pytest.param(
        {"guard_cpu_baseline_vcpu": 0},
        ["guard_cpu_baseline_vcpu must be above 0", "got 0 and 576"],
        id="guard-cpu-baseline-of-nothing",
    ),
    pytest.param(
        {"app_block_batch_size": 500},
        ["app_block_batch_size 1-200", "got 500"],
        id="app-batch-larger-than-applywrites-takes",
    ),
    pytest.param(
        {"app_follower_page_size": 20000},
        ["app_follower_page_size", "100-10000", "got 20000"],
        id="app-follower-page-over-the-limit",
    ),
    pytest.param(
        {"app_follower_page_delay_s": -1},
        ["app_follower_page_delay_s 0-3600", "got -1"],
        id="app-follower-page-delay-negative",
    ),
    pytest.param(
        {"guard_cloudwatch_volume_id": "my-disk"},
        ["guard_cloudwatch_volume_id", "empty or a volume id", "got 'my-disk'"],
        id="guard-cloudwatch-volume-not-a-volume-id",
    ),
    pytest.param(
        {"guard_cloudwatch_volume_id": "vol-0123456789abcdef0", "guard_cloudwatch_interval_s": 10},
        ["guard_cloudwatch_interval_s at least 60", "got 10"],
        id="guard-cloudwatch-asked-more-often-than-aws-publishes",
    ),
    pytest.param(
        {"guard_volume_type": "gp3", "guard_cloudwatch_instance_id": "web-1"},
        ["guard_cloudwatch_instance_id empty or an instance id", "got 'web-1'"],
        id="guard-cloudwatch-instance-not-an-instance-id",
    ),
    pytest.param(
        {"guard_volume_type": "gp3", "guard_cloudwatch_volume_id": "vol-0123456789abcdef0"},
        [
            "on guard_volume_type gp3 CloudWatch's figure is the instance's EBSIOBalance%",
            "read only when guard_cloudwatch_instance_id is set",
        ],
        id="guard-gp3-with-a-volume-id-but-no-instance-id",
    ),
    pytest.param(
        {"app_oauth_client_key": "not a key"},
        ["app_oauth_client_key empty or a PEM private"],
        id="oauth-client-key-not-a-pem",
    ),
    pytest.param(
        {"app_bluesky_appview_audience": "did:web:api.bsky.app"},
        ["app_bluesky_appview_audience a DID with a #service", "got did:web:api.bsky.app"],
        id="appview-audience-without-its-service",
    ),
    pytest.param(
        {"nginx_fakesky_port": 80},
        ["nginx_fakesky_port 0 or 1024-65535 (got 80)"],
        id="fake-authorize-page-on-a-privileged-port",
    ),
    pytest.param(
        {"monitoring_scrape_interval_s": 300},
        ["monitoring_scrape_interval_s must be 5-60", "got 300"],
        id="metrics-once-in-five-minutes",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("extra_vars", "expected"), BAD_SETTINGS)
def test_bad_setting_fails_in_preflight_before_any_change(inventory, extra_vars, expected):
    result = run_playbook(inventory, "site.yml", extra_vars, "--check")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for text in expected:
        assert text in output, output
    assert "PLAY [Preflight" in output
    # No tier play started: the run stopped inside the preflight.
    assert "PLAY [Harden" not in output, output
    assert "changed=0" in output


TEST_CA_HOST = {
    "fakesky_enabled": True,
    "nginx_domain": "shoestring.example.org",
    "nginx_acme_email": "ops@example.org",
    "nginx_acme_server": "https://localhost:14000/dir",
}


# On gp3 the guard reads the instance's EBSIOBalance%, named by the instance's id alone.
GP3_ON_AWS = {"guard_volume_type": "gp3", "guard_cloudwatch_instance_id": "i-0123456789abcdef0"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra_vars",
    [{}, TEST_CA_HOST, GP3_ON_AWS],
    ids=["defaults", "fake-network-with-a-test-ca", "gp3-read-by-the-instance-s-balance"],
)
def test_good_settings_pass_the_preflight(inventory, extra_vars):
    result = run_playbook(inventory, "playbooks/preflight.yml", extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "memory budget on preflight-target" in output
    assert "changed=0" in output


@pytest.mark.slow
def test_a_deployment_without_a_beat_host_fails_in_preflight(tmp_path, made_secrets):
    # Zero beat hosts: nothing would ever release a waiting batch or lift an expired block.
    # (Two cannot be shown with one host; the same assertion counts the group.)
    inventory = write_inventory(tmp_path, ["database", "web", "workers"], made_secrets)
    result = run_playbook(inventory, "site.yml", {}, "--check")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "exactly one host in the beat group" in output, output
    assert "got 0" in output, output
    assert "PLAY [Harden" not in output, output


@pytest.mark.slow
def test_tiers_on_several_hosts_with_the_redis_broker_fail_in_preflight(tmp_path, made_secrets):
    # Redis listens on its host's loopback: a web host apart from the workers cannot reach it.
    inventory = write_inventory(
        tmp_path,
        {
            "database": ["preflight-target"],
            "web": ["preflight-target"],
            "workers": ["preflight-worker"],
            "beat": ["preflight-worker"],
        },
        made_secrets,
    )
    result = run_playbook(inventory, "site.yml", {}, "--check")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "workers_broker redis (the host's own broker, on loopback) needs" in output, output
    assert "PLAY [Harden" not in output, output


# The tiers on two hosts (both this machine, by a local connection), sharing SQS.
SPLIT = {
    "database": ["preflight-target"],
    "web": ["preflight-target"],
    "workers": ["preflight-worker"],
    "beat": ["preflight-worker"],
}
SQS = {
    "shoestring_on_aws": True,
    "shoestring_sqs_queue_url_base": "http://127.0.0.1:5000/123456789012/",
}


def test_a_run_limited_to_one_host_learns_the_other_hosts_addresses(tmp_path, made_secrets):
    # --limit leaves the workers host out of the run; the database host's pg_hba.conf and
    # firewall are built from its address, which the preflight learns (else it would be
    # unknown, and the check below refuses a loopback one).
    inventory = write_inventory(tmp_path, SPLIT, made_secrets)
    result = run_playbook(inventory, "playbooks/preflight.yml", SQS, "--limit", "preflight-target")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Learn the addresses of the deployment's hosts this run leaves out" in output
    assert "preflight-worker" in output, output
    assert "changed=0" in output


@pytest.mark.parametrize(
    ("groups", "extra_vars", "expected"),
    [
        pytest.param(
            {**SPLIT, "beat": ["preflight-target", "preflight-worker"]},
            SQS,
            ["exactly one host in the beat group", "(got 2: preflight-"],
            id="two-beat-hosts",
        ),
        pytest.param(
            {**SPLIT, "database": ["preflight-target", "preflight-worker"]},
            SQS,
            ["exactly one host of the deployment in the database group", "got 2"],
            id="two-database-hosts",
        ),
        pytest.param(
            SPLIT,
            {**SQS, "shoestring_private_address": "127.0.0.1"},
            ["shoestring_private_address must be an IPv4 address", "preflight-worker: 127.0.0.1"],
            id="loopback-private-address",
        ),
    ],
)
def test_a_deployment_of_a_bad_shape_fails_in_preflight(
    tmp_path, made_secrets, groups, extra_vars, expected
):
    inventory = write_inventory(tmp_path, groups, made_secrets)
    result = run_playbook(inventory, "playbooks/preflight.yml", extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for text in expected:
        assert text in output, output
    assert "Plan the memory budget" not in output, output
