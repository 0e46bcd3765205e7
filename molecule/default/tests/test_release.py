"""Releases: site.yml deploys app/ as a built artifact (no tests, no fake network) into a
timestamped release with its own venv, migrates, switches `current` and restarts web,
every pool and beat on it; `-e shoestring_rollback=true` switches back and restarts them
again. The test runs site.yml against the converged host as an operator would: it deploys
a second build, then rolls back, and prints the wall time of each."""

import re
import shutil
import time
from pathlib import Path

import pytest
from shoestring_host import broker_is_redis

REPO = Path(__file__).resolve().parents[3]
RELEASES = "/opt/shoestring/releases"
UNITS = {
    "shoestring-web.service",
    "shoestring-worker-interactive.service",
    "shoestring-worker-bulk.service",
    "shoestring-worker-maintenance.service",
    "shoestring-beat.service",
}
# Two releases older than anything deployed, so a deploy has something to prune.
OLD = ["20000101T000000Z-000000000001", "20000102T000000Z-000000000002"]


def answering_release(host):
    headers = host.check_output("curl -sk -o /dev/null -D - https://localhost/healthz")
    return re.search(r"(?im)^x-shoestring-release: (\S+)", headers)[1]


def running_releases(host):
    """Unit -> the releases its processes run, read from their venv's interpreter path."""
    running = {}
    for line in host.check_output("ps -eo unit:45=,args=").splitlines():
        unit, _, args = line.strip().partition(" ")
        match = re.search(rf"{RELEASES}/([^/]+)/venv/bin/python", args)
        if unit in UNITS and match:
            running.setdefault(unit, set()).add(match[1])
    return running


def every_unit_runs(release):
    return {unit: {release} for unit in UNITS}


def releases(host):
    return sorted(host.check_output("ls %s", RELEASES).split())


def make_release(host, release_id):
    """A release directory that looks complete but holds no code: nothing may run it."""
    host.check_output("mkdir -p %s/%s", RELEASES, release_id)
    host.check_output("echo %s > %s/%s/RELEASE", release_id, RELEASES, release_id)


def test_a_deploy_switches_every_service_and_a_rollback_switches_them_back(host, site, tmp_path):
    if not broker_is_redis(host):
        pytest.skip("proved once, in the default (Redis) scenario")
    first = answering_release(host)
    assert running_releases(host) == every_unit_runs(first)
    # Two releases older than anything, for the deploy to prune, and one newer than
    # the running release that never ran: a rollback must not land on it.
    never_ran = host.check_output("date -u +%Y%m%dT%H%M%SZ") + "-0000000000ff"
    for release_id in [*OLD, never_ran]:
        make_release(host, release_id)
    try:
        before = releases(host)

        # A second build: the same code and one more file, so another content hash.
        source = tmp_path / "app"
        shutil.copytree(REPO / "app", source, ignore=shutil.ignore_patterns("__pycache__"))
        # Unique each run, so a rerun on the same host makes a new build too.
        note = f'"""The release test\'s second build ({time.time_ns()})."""\n'
        (source / "config" / "build_note.py").write_text(note)
        deploy_s, _ = site("site.yml", "--tags", "release", "-e", f"release_source_dir={source}")
        second = answering_release(host)
        assert second not in before
        assert second > never_ran > first, "a new release is named after the time it was made"
        assert running_releases(host) == every_unit_runs(second)
        assert host.file("/opt/shoestring/current").linked_to == f"{RELEASES}/{second}"
        assert host.file(f"{RELEASES}/{second}/app/config/build_note.py").exists
        assert host.file(f"{RELEASES}/{second}/venv/bin/python").exists
        assert host.file(f"{RELEASES}/{second}/PREVIOUS").content_string.strip() == first
        assert (
            host.check_output(
                "find %s/%s/app -name tests -o -name fakesky -o -name conftest.py", RELEASES, second
            )
            == ""
        ), "the artifact holds tests or the fake network"
        # release_keep 3: the oldest go; the newest three and the one that ran before stay.
        kept = sorted({*before[-2:], first, second})
        assert releases(host) == kept
        assert not set(OLD) & set(kept)

        rollback_s, _ = site("site.yml", "--tags", "release", "-e", "shoestring_rollback=true")
        assert answering_release(host) == first
        assert running_releases(host) == every_unit_runs(first)
        assert releases(host) == kept
    finally:
        # Whatever failed above, the next test (and the next verify run) finds the first
        # release running and no code-less release directory left.
        if answering_release(host) != first:
            site("site.yml", "--tags", "release", "-e", "shoestring_rollback=true")
        host.check_output("rm -rf %s/%s", RELEASES, never_ran)

    print(
        f"\nsite.yml --tags release wall time: deploy of a new build {deploy_s:.0f}s,"
        f" rollback {rollback_s:.0f}s"
    )
