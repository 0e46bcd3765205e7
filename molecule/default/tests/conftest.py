import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from shoestring_host import FAKE

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


@pytest.fixture
def site():
    """Run a playbook (site.yml or one tier's) against the Molecule host, as the converge
    step does; returns its wall time in seconds and its output."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.skip("runs site.yml through Molecule's inventory (molecule verify)")

    def run(playbook, *extra_args):
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

    return run
