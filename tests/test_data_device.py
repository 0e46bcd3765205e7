"""postgresql_data_device (roles/postgresql/tasks/data_device.yml): /var/lib/postgresql on a
disk of its own, as the AWS data volume reaches a host. A Debian 12 systemd container (the
Molecule image) gets a loop device as /dev/xvdf; the role's tasks format and mount it, then
Debian's PostgreSQL package installs onto it and its cluster runs from it, held to it by
RequiresMountsFor. Checked from outside the play: findmnt, /etc/fstab, systemctl, pg_lsclusters.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.polling import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
IMAGE = "shoestring/debian12-systemd:1"
UNIT = "postgresql@15-main.service"
BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"


def run(*command, check=True, timeout=300):
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    image = tmp_path_factory.mktemp("disk") / "data.img"
    run("truncate", "--size", "256M", str(image))
    device = run("losetup", "--find", "--show", str(image)).stdout.strip()
    yield device
    run("losetup", "--detach", device, check=False)


@pytest.fixture(scope="module")
def host(disk):
    if run("docker", "image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"no {IMAGE} image: make image builds it (make pytest does)")
    name = f"shoestring-pytest-data-device-{os.getpid()}"
    run(
        "docker", "run", "--detach", "--name", name,
        "--device", f"{disk}:/dev/xvdf",
        "--cap-add", "SYS_ADMIN", "--cgroupns", "host",
        "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs", "/run", "--tmpfs", "/run/lock",
        "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
        IMAGE, "/lib/systemd/systemd",
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                on(name, "systemctl is-system-running", check=False).stdout.strip()
                in ("running", "degraded")
            ),
            120,
            message=f"systemd in {name} never came up",
        )
        yield name
    finally:
        run("docker", "rm", "--force", name, check=False)


def on(host, script, check=True, timeout=300):
    return run("docker", "exec", host, "sh", "-c", script, check=check, timeout=timeout)


def data_device_play(host, tmp_path, device="/dev/xvdf"):
    """Only the role's data-device tasks, through Docker, as site.yml runs them."""
    playbook = tmp_path / "data-device.yml"
    playbook.write_text(
        "- hosts: all\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: postgresql\n"
        "        tasks_from: data_device\n"
    )
    # The role depends on memory_budget, which would read the build machine's RAM here.
    variables = {"ansible_connection": "community.docker.docker", "memory_budget_total_mb": 2048}
    inventory = {"all": {"hosts": {host: variables}}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    return subprocess.run(
        [
            "ansible-playbook", "-i", str(tmp_path / "hosts.json"), str(playbook),
            "-e", json.dumps({"postgresql_data_device": device}),
        ],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip


def changed(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return int(re.search(r"changed=(\d+)", result.stdout.split("PLAY RECAP")[1]).group(1))


def test_a_device_that_is_not_there_is_refused_by_name(host, tmp_path):
    result = data_device_play(host, tmp_path, device="/dev/xvdz")
    assert result.returncode != 0
    assert "postgresql_data_device /dev/xvdz is not a block device" in result.stdout, result.stdout
    assert on(host, "findmnt /var/lib/postgresql", check=False).returncode == 1


def test_data_already_on_the_root_disk_is_never_hidden(host, tmp_path):
    on(host, "mkdir -p /var/lib/postgresql/15/main && touch /var/lib/postgresql/15/main/PG_VERSION")
    try:
        result = data_device_play(host, tmp_path)
        assert result.returncode != 0
        assert "/var/lib/postgresql already holds" in result.stdout
        assert on(host, "findmnt /var/lib/postgresql", check=False).returncode == 1
        # Nothing was written to the device either: it still has no file system.
        assert on(host, "blkid /dev/xvdf", check=False).stdout == ""
    finally:
        on(host, "rm -r /var/lib/postgresql")


def test_the_device_is_formatted_mounted_and_kept_over_a_second_run(host, tmp_path):
    assert changed(data_device_play(host, tmp_path)) > 0
    mount = on(host, "findmnt --noheadings --output SOURCE,FSTYPE,OPTIONS /var/lib/postgresql")
    source, fstype, options = mount.stdout.split()
    assert (source, fstype) == ("/dev/xvdf", "ext4")
    assert "noatime" in options.split(",")
    uuid = on(host, "blkid --match-tag UUID --output value /dev/xvdf").stdout.strip()
    fstab = on(host, "cat /etc/fstab").stdout
    assert re.search(rf"^UUID={uuid} /var/lib/postgresql ext4 noatime,nofail 0 0$", fstab, re.M)
    on(host, "touch /var/lib/postgresql/kept")
    assert changed(data_device_play(host, tmp_path)) == 0
    # Not formatted again: what was written is still there.
    assert on(host, "test -e /var/lib/postgresql/kept", check=False).returncode == 0


def test_postgresql_installs_onto_the_device_and_requires_it(host, tmp_path):
    # By the stable name EC2 gives an EBS volume (a symlink to whichever NVMe node it
    # got), as the AWS inventory names it: the same mount, nothing changed.
    data_device_play(host, tmp_path)  # mounted, whichever test ran before
    on(host, f"mkdir -p /dev/disk/by-id && ln -sf /dev/xvdf {BY_ID}")
    assert changed(data_device_play(host, tmp_path, device=BY_ID)) == 0
    on(host, "apt-get update -qq && apt-get install -qq -y postgresql-15 >/dev/null", timeout=900)
    on(host, f"systemctl daemon-reload && systemctl restart {UNIT}")
    clusters = on(host, "pg_lsclusters --no-header").stdout.split()
    assert clusters[:4] == ["15", "main", "5432", "online"], clusters
    data = clusters[5]
    assert on(host, f"findmnt --noheadings --output SOURCE --target {data}").stdout.strip() == (
        "/dev/xvdf"
    )
    assert (
        "/var/lib/postgresql"
        in on(host, f"systemctl show --property RequiresMountsFor --value {UNIT}").stdout.split()
    )
    answer = on(host, "su postgres -c \"psql -Atc 'SHOW data_directory'\"").stdout.strip()
    assert answer == data
