import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from shoestring_host import FAKE, REPROVISIONED_MARK

REPO = Path(__file__).resolve().parents[3]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "reprovisions: runs site.yml with other variables; runs after every other test"
    )


def pytest_collection_modifyitems(items):
    """Tests that leave the host provisioned differently go last, in their own order."""
    items.sort(key=lambda item: item.get_closest_marker("reprovisions") is not None)


@pytest.fixture(scope="module")
def app_env(host):
    """The app's settings file, parsed: the real credentials the services use."""
    content = host.file("/etc/shoestring/shoestring.env").content_string
    return dict(re.findall(r'^([A-Z_]+)="(.*)"$', content, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def psql_as(host):
    """Run SQL over TCP on localhost as a given role and password."""

    def run(user, password, sql, database="shoestring"):
        return host.run(
            "PGPASSWORD=%s psql -h 127.0.0.1 -U %s -d %s -Atc %s", password, user, database, sql
        )

    return run


@pytest.fixture
def fake_bluesky(host):
    """The fake network that roles/fakesky runs on the host's loopback, reset to its defaults."""
    assert host.service("fakesky.service").is_running
    for _ in range(40):
        if host.run("curl -sf -X POST %s/_fake/reset", FAKE).rc == 0:
            break
        time.sleep(0.25)
    yield FAKE
    host.run("curl -sf -X POST %s/_fake/reset", FAKE)


def run_playbook(inventory, playbook, *extra_args):
    """Run a playbook against the Molecule host, as the converge step does; returns its
    wall time in seconds and its output."""
    started = time.monotonic()
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, playbook, *extra_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return time.monotonic() - started, result.stdout


@pytest.fixture
def site():
    """Run a playbook (site.yml or one tier's) against the Molecule host."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("runs site.yml through Molecule's inventory (molecule verify)")
    return lambda playbook, *extra_args: run_playbook(inventory, playbook, *extra_args)


_checked_hosts = set()


@pytest.fixture(scope="module", autouse=True)
def host_as_converged(host):
    """Every test starts on the host as `molecule converge` left it: a verify run after
    one that reprovisioned it (the naive stack, which goes last) runs site.yml with the
    scenario's own inventory first, so `molecule verify` can run again and again."""
    name = host.backend.get_hostname()
    if name in _checked_hosts:
        return
    _checked_hosts.add(name)
    if not host.file(REPROVISIONED_MARK).exists:
        return
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, f"{REPROVISIONED_MARK} is on the host: run molecule converge first"
    took, _ = run_playbook(inventory, "site.yml")
    print(f"\nsite.yml restored the converged host in {took:.0f} s")
    host.run("rm -f %s", REPROVISIONED_MARK)
