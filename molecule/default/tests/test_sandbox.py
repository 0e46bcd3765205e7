"""Every Shoestring unit runs in the shared sandbox (roles/service/templates/sandbox.conf.j2),
scored by systemd itself: `systemd-analyze security` must rate each at most 3.0."""

import re

import pytest
from shoestring_host import unit_props

UNITS = [
    "shoestring-web.service",
    "shoestring-worker-interactive.service",
    "shoestring-worker-bulk.service",
    "shoestring-worker-maintenance.service",
    "shoestring-beat.service",
    "shoestring-backup.service",
    "shoestring-guard.service",
    "shoestring-metrics.service",
]
MAX_EXPOSURE = 3.0
SANDBOX = {
    "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectProc": "invisible",
    "RestrictNamespaces": "yes",
    "NoNewPrivileges": "yes",
    "MemorySwapMax": "0",
}


def exposure(host, unit):
    out = host.check_output("systemd-analyze security --no-pager %s", unit)
    return float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)[1])


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_scores_at_most_3_0(host, unit):
    score = exposure(host, unit)
    print(f"\n{unit}: exposure {score}")
    assert score <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_has_no_capabilities_and_only_the_system_calls_of_a_service(host, unit):
    props = unit_props(host, unit, *SANDBOX)
    assert props == SANDBOX
    assert "@system-service" in host.check_output(
        "systemctl cat %s | grep ^SystemCallFilter=", unit
    )
