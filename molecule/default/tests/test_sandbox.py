"""Every Shoestring unit runs in the shared sandbox (roles/service/templates/sandbox.conf.j2),
scored by systemd itself: `systemd-analyze security` must rate each at most 3.0. nginx and
PostgreSQL, whose Debian units come unsandboxed (9.6 UNSAFE), get the same sandbox with what
each needs and must rate at most 4.0."""

import re

import pytest
from shoestring_host import main_pid, unit_props

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
# Debian's services, and what of root's powers each keeps (nginx's master binds 80 and 443
# and hands its workers to www-data; PostgreSQL runs as postgres and keeps none).
DEBIAN_UNITS = {
    "nginx.service": (
        "cap_chown cap_dac_override cap_kill cap_setgid cap_setuid cap_net_bind_service"
    ),
    "postgresql@15-main.service": "",
}
MAX_DEBIAN_EXPOSURE = 4.0
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


@pytest.mark.parametrize("unit", DEBIAN_UNITS)
def test_nginx_and_postgresql_score_at_most_4_0_with_only_the_powers_they_need(host, unit):
    score = exposure(host, unit)
    print(f"\n{unit}: exposure {score}")
    assert score <= MAX_DEBIAN_EXPOSURE
    assert host.service(unit).is_running
    sandbox = {k: v for k, v in SANDBOX.items() if k != "MemorySwapMax"}
    sandbox["CapabilityBoundingSet"] = DEBIAN_UNITS[unit]
    sandbox["ProtectSystem"] = "strict"
    assert unit_props(host, unit, *sandbox) == sandbox


def test_the_sandboxed_nginx_and_postgresql_still_do_their_work(host):
    """A reload (what the certificate renewal does) and a write and a checkpoint in the
    database, each through the sandbox."""
    main = main_pid(host, "nginx.service")
    host.run_expect([0], "systemctl reload nginx.service")
    assert main_pid(host, "nginx.service") == main
    login = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/accounts/login/")
    assert login.stdout == "200"
    workers = host.check_output("ps -o user= --ppid %s", str(main)).split()
    assert set(workers) == {"www-data"}, workers
    sql = (
        "CREATE TEMP TABLE sandbox_probe AS SELECT 1 AS x; CHECKPOINT;"
        " SELECT count(*) FROM sandbox_probe"
    )
    out = host.check_output("runuser -u postgres -- psql -XAtq -c %s", sql)
    assert out.strip().splitlines()[-1] == "1"
