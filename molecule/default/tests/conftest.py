import re
import time

import pytest
from shoestring_host import FAKE


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
