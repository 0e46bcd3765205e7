"""Hosts come by inventory alone: a third workers host, a new container on the scenario's
network, joins the running cluster after one `site.yml` run that names it (limited to it, the
database host and the host beat leaves: the run learns every other host's address itself), and
beat moves to it in the same run. Then its pools take part in a campaign from its own address,
and beat runs on it alone.

Runs last (after test_cluster.py): it changes the cluster for good, and removes its host at the
end, beat with it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import testinfra
import yaml
from conftest import ADDRESSES, FAKE_URL, NET, PREFIX, container
from shoestring_host import blocked_once, fake_call, start_campaign, wait_for_campaign

REPO = Path(__file__).resolve().parents[3]
NEW = "worker-c"
NEW_ADDRESS = f"{NET}.14"
UNLIMITED = {"write_points_per_hour": 1_000_000, "write_points_per_day": 1_000_000}
DOCKER_CONNECTION = {"ansible_connection": "community.docker.docker"}


def start_container(name, address):
    """A t3.small-shaped systemd container on the scenario's network, as Molecule starts its
    platforms (molecule.yml)."""
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=120)
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--hostname", name),
            *("--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cgroupns", "host"),
            *("--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"),
            *("-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock"),
            *("--memory", "2g", "--cpus", "2", "--stop-signal", "SIGRTMIN+3"),
            *("--network", f"{PREFIX}-cluster", "--ip", address),
            *("shoestring/debian12-systemd:1", "/lib/systemd/systemd"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


def grown_inventory(tmp_path, molecule_inventory):
    """Molecule's inventory with the new host in the workers group and beat moved to it (its
    host variables those of the other workers hosts)."""
    source = Path(molecule_inventory).parent
    inventory = tmp_path / "inventory"
    shutil.copytree(source, inventory)
    groups = yaml.safe_load((inventory / "ansible_inventory.yml").read_text())
    name = container(NEW)
    groups["all"]["hosts"][name] = DOCKER_CONNECTION
    groups["workers"]["hosts"][name] = DOCKER_CONNECTION
    groups["beat"]["hosts"] = {name: DOCKER_CONNECTION}
    (inventory / "ansible_inventory.yml").write_text(yaml.safe_dump(groups))
    shutil.copy(inventory / "host_vars" / container("worker-b"), inventory / "host_vars" / name)
    return inventory


@pytest.fixture
def new_host(tmp_path):
    name = container(NEW)
    start_container(name, NEW_ADDRESS)
    try:
        yield testinfra.get_host(f"docker://{name}")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=120)


def test_a_workers_host_added_by_inventory_takes_work_after_one_run(hosts, new_host, tmp_path):
    molecule_inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    inventory = grown_inventory(tmp_path, molecule_inventory)
    # The deployment's secrets and CA stay where Molecule's runs made them.
    secrets = Path(molecule_inventory).parents[1] / "credentials" / "inventory"
    assert (secrets / "ca.pem").exists(), secrets
    limit = ",".join(container(name) for name in ("db", "worker-a", NEW))
    run = subprocess.run(
        [
            *("ansible-playbook", "-i", str(inventory), "site.yml", "--limit", limit),
            *("-e", f"shoestring_secrets_dir={secrets}"),
        ],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]

    # The database host admits it (pg_hba.conf, the firewall), built from the address the
    # run learnt; the hosts outside the run kept theirs.
    hba = hosts["db"].file("/etc/postgresql/15/main/pg_hba.conf").content_string
    for address in (ADDRESSES["web"], ADDRESSES["worker-a"], ADDRESSES["worker-b"], NEW_ADDRESS):
        assert f" {address}/32 " in hba, hba
    assert "127.0.0.1/32  scram" in hba
    # Beat moved: on the new host only.
    assert new_host.service("shoestring-beat.service").is_running
    assert not hosts["worker-a"].file("/etc/systemd/system/shoestring-beat.service").exists
    for pool in ("interactive", "bulk", "maintenance"):
        assert new_host.service(f"shoestring-worker-{pool}.service").is_running, pool

    # Its pools take part in a campaign, from its own address, within its own budget.
    web = hosts["web"]
    fake_call(web, "POST", "/_fake/reset", fake=FAKE_URL)
    count = 3000
    campaign = start_campaign(web, count, fake=FAKE_URL, **UNLIMITED)
    assert wait_for_campaign(web, campaign, 600) == "done"
    blocked_once(web, count, fake=FAKE_URL)
    seen = fake_call(web, "GET", "/_fake/state", fake=FAKE_URL)["totals"]["addresses"]
    assert seen.get(NEW_ADDRESS, {}).get("writes", 0) > 0, seen
    assert all(counts["ip_rate_limited"] == 0 for counts in seen.values()), seen
