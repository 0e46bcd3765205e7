"""The benchmark's two hosts differ only by inventory: what each role makes of
inventory/bench/<host>.yml, read through the roles' own defaults and vars (the workers'
settings dict, Postgres' settings, Redis' persistence), not through a copy of them."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Secrets a real run generates in group_vars; only their presence matters here.
SECRETS = {
    "workers_django_secret_key": "x" * 50,
    "workers_credentials_key": "k" * 44,
    "workers_database_passwords": {"interactive": "a", "bulk": "b", "maintenance": "c"},
    "workers_broker_env": {"CELERY_BROKER_URL": "redis://celery:pw@127.0.0.1:6379/0"},
}


def probe_role(roles_dir, role):
    """A role with the real role's defaults and vars and one task: print them."""
    probe = roles_dir / f"{role}_probe"
    (probe / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars"):
        if (REPO / "roles" / role / part).is_dir():
            (probe / part).symlink_to(REPO / "roles" / role / part)
    return probe


def settings_of(tmp_path, host):
    roles_dir = tmp_path / "roles"
    probe_role(roles_dir, "workers")
    probe_role(roles_dir, "postgresql")
    probe_role(roles_dir, "redis")
    probe_role(roles_dir, "app")
    for role, expression in {
        "workers": "_workers_common_env",
        "postgresql": "{'synchronous_commit': _postgresql_settings.synchronous_commit}",
        "redis": "{'appendonly': redis_appendonly, 'appendfsync': redis_appendfsync}",
        # The web app's copies of the batch size and the paging, wired in group_vars
        # (what site.yml reads).
        "app": "{'SHOESTRING_BLOCK_BATCH_SIZE': app_block_batch_size | int,"
        " 'SHOESTRING_FOLLOWER_PAGE_SIZE': app_follower_page_size | int,"
        " 'SHOESTRING_FOLLOWER_PAGE_DELAY_S': app_follower_page_delay_s | int}",
    }.items():
        (roles_dir / f"{role}_probe" / "tasks" / "main.yml").write_text(
            "- name: Print\n  ansible.builtin.debug:\n"
            f'    msg: "PROBE {role} {{{{ ({expression}) | to_json }}}}"\n'
        )
    playbook = tmp_path / "probe.yml"
    playbook.write_text(
        "- name: Probe\n  hosts: all\n  gather_facts: false\n"
        f"  vars_files: [{REPO / 'group_vars' / 'all' / 'main.yml'}]\n"
        "  roles: [workers_probe, postgresql_probe, redis_probe, app_probe]\n"
    )
    extra = {**SECRETS, "ansible_connection": "local", "postgresql_version": 15}
    inventory = REPO / "inventory" / "bench" / f"{host}.yml"
    result = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), "-e", json.dumps(extra), str(playbook)],
        env=dict(
            os.environ,
            ANSIBLE_ROLES_PATH=str(roles_dir),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_STDOUT_CALLBACK="default",
            # One JSON line per result, whatever ansible.cfg asks for (yaml folds long ones).
            ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = {}
    for line in result.stdout.splitlines():
        if '"msg": "PROBE ' in line:
            _, role, value = json.loads("{" + line.strip() + "}")["msg"].split(" ", 2)
            found[role] = json.loads(value)
    return found


@pytest.mark.slow
def test_the_tuned_host_is_the_appliance_as_shipped(tmp_path):
    found = settings_of(tmp_path, "tuned")
    assert found["workers"]["SHOESTRING_BLOCK_BATCH_SIZE"] == 200
    assert found["app"]["SHOESTRING_BLOCK_BATCH_SIZE"] == 200
    assert found["workers"]["SHOESTRING_FOLLOWER_PAGE_SIZE"] == 400
    assert found["app"]["SHOESTRING_FOLLOWER_PAGE_SIZE"] == 400
    assert found["workers"]["SHOESTRING_FOLLOWER_PAGE_DELAY_S"] == 0
    assert found["app"]["SHOESTRING_FOLLOWER_PAGE_DELAY_S"] == 0
    assert found["workers"]["SHOESTRING_FOLLOWER_PAGE_RELEASE"] == "beat"
    assert found["postgresql"]["synchronous_commit"] == "off"
    assert found["redis"] == {"appendonly": False, "appendfsync": "everysec"}


@pytest.mark.slow
def test_the_naive_host_is_the_seeds_stack_by_inventory_alone(tmp_path):
    tuned, naive = settings_of(tmp_path / "t", "tuned"), settings_of(tmp_path / "n", "naive")
    assert naive["workers"]["SHOESTRING_BLOCK_BATCH_SIZE"] == 1
    # The web app tells people when their budget pays for a batch of the workers' size.
    assert naive["app"]["SHOESTRING_BLOCK_BATCH_SIZE"] == 1
    # The seed's pages: 5,000 followers, 10 minutes apart; the web app estimates with them.
    assert naive["workers"]["SHOESTRING_FOLLOWER_PAGE_SIZE"] == 5000
    assert naive["app"]["SHOESTRING_FOLLOWER_PAGE_SIZE"] == 5000
    assert naive["workers"]["SHOESTRING_FOLLOWER_PAGE_DELAY_S"] == 600
    assert naive["app"]["SHOESTRING_FOLLOWER_PAGE_DELAY_S"] == 600
    assert naive["workers"]["SHOESTRING_FOLLOWER_PAGE_RELEASE"] == "countdown"
    assert naive["postgresql"]["synchronous_commit"] == "on"
    assert naive["redis"] == {"appendonly": True, "appendfsync": "always"}
    # Nothing else differs.
    for role in ("workers", "postgresql"):
        changed = {k for k in tuned[role] if tuned[role][k] != naive[role].get(k)}
        assert changed <= {
            "SHOESTRING_BLOCK_BATCH_SIZE",
            "SHOESTRING_FOLLOWER_PAGE_SIZE",
            "SHOESTRING_FOLLOWER_PAGE_DELAY_S",
            "SHOESTRING_FOLLOWER_PAGE_RELEASE",
            "synchronous_commit",
        }, changed
