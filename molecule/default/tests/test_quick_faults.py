"""make test's share of the fault suite: the quick faults of bench/faults.py (`make faults`
runs them all on a bench host), injected into this converged host under the suite's own
load, with the truth asked of the fake network afterwards. Each must lose no block, make none
twice, leave no unblock undone and no batch row waiting, and recover within the deadline.

Runs once, on the Redis host of the default scenario: the faults are the same on both brokers
(a worker child killed, the network dropping connections)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from shoestring_host import broker_is_redis

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from bench import faults  # noqa: E402
from bench.run import AGENT_HOME, install_agent  # noqa: E402

# The full suite's deadline. A batch row a fault strands without a message comes back
# through the stranded sweep (600 s after it was queued, then a sweep every 60 s): slow, but
# a recovery, so it fits; loss, a duplicate or no recovery even then fails.
DEADLINE_S = 900
BULK = "shoestring-worker-bulk.service"


@pytest.fixture
def fault_host(host, fake_bluesky, monkeypatch):
    """This host as the fault suite's target, the bench agent copied onto it; afterwards the
    agent goes, and the bulk pool's limit must still be the provisioned one."""
    if not broker_is_redis(host):
        pytest.skip("runs once, on the default scenario's Redis host")
    name = host.backend.get_hostname()
    monkeypatch.setattr(faults, "HOST", name)
    install_agent(name)
    limit = host.check_output("systemctl show -P MemoryMax %s", BULK)
    yield name
    subprocess.run(["docker", "exec", name, "rm", "-rf", AGENT_HOME], check=False)
    assert host.check_output("systemctl show -P MemoryMax %s", BULK) == limit


def test_the_quick_faults_lose_nothing_and_make_nothing_twice(host, fault_host, tmp_path, capsys):
    quick = [fault for fault in faults.FAULTS if fault.quick]
    assert quick, "bench/faults.py marks no fault quick"
    rows = []
    # The suite's progress lines (stderr) and the table show in the test's output as it goes.
    with capsys.disabled():
        for fault in quick:
            started = time.monotonic()
            rows.append(faults.run_fault(fault, tmp_path, DEADLINE_S))
            rows[-1]["wall_s"] = time.monotonic() - started
        print("\nquick faults on the Molecule host:\n" + faults.table(rows))
        for row in rows:
            print(f"  {row['fault']}: {row['wall_s']:.0f} s from load to verdict")
    problems = faults.quick_problems(rows)
    assert not problems, problems
