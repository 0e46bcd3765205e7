"""The cluster scenario's hosts by name (testinfra's own `host` fixture would run each test on
every host), and the default scenario's on-host helpers."""

import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))

PREFIX = os.environ.get("SHOESTRING_MOLECULE_PREFIX", "shoestring-molecule")
NET = os.environ.get("SHOESTRING_CLUSTER_NET", "172.30.57")
ADDRESSES = {
    "db": f"{NET}.10",
    "web": f"{NET}.11",
    "worker-a": f"{NET}.12",
    "worker-b": f"{NET}.13",
    "fake": f"{NET}.20",
}
FAKE_URL = f"http://{ADDRESSES['fake']}:8787"


def container(name):
    return f"{PREFIX}-cluster-{name}"


def tier_host(name):
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    return testinfra.get_host(f"ansible://{container(name)}?ansible_inventory={inventory}")


@pytest.fixture(scope="session")
def hosts():
    return {name: tier_host(name) for name in ADDRESSES}
