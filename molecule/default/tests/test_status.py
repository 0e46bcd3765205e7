"""`shoestring-status` on the converged host: one screen an operator reads at 3 a.m., ending
with the problems it saw (exit 1 when there is one)."""

import re

import pytest
from shoestring_host import manage_shell, wait_until

QUEUES = ["interactive", "bulk", "maintenance"]


def status(host):
    result = host.run("shoestring-status")
    assert result.rc in (0, 1), result.stdout + result.stderr
    return result


def test_one_screen_shows_units_memory_disk_queues_backup_certificate_and_errors(host):
    result = status(host)
    out = result.stdout
    print("\n" + out)
    assert len(out.splitlines()) <= 60, "more than a screen"
    for unit in [
        "shoestring-web.service",
        "shoestring-worker-bulk.service",
        "shoestring-beat.service",
        "postgresql@15-main.service",
        "nginx.service",
    ]:
        assert re.search(rf"{re.escape(unit)}\s+active/running\s+\d+M / \d+M\s+\d+%", out), unit
    assert re.search(r"available \d+M of \d+M\s+swap used \d+M of \d+M", out)
    assert re.search(r"pressure some avg10=[0-9.]+", out)
    assert re.search(r"OOM kills \d+", out)
    assert re.search(r"  / +\d+% used, [0-9.]+ GiB free", out)
    assert re.search(r"bulk work (running|PAUSED) .*last reading \d+s ago", out)
    assert re.search(r"burst balance [0-9.]+% \(gp[23] ", out)
    for queue in QUEUES:
        assert re.search(rf"^  {queue} +\d+ ", out, re.MULTILINE), queue
    assert "campaigns running " in out
    assert "kill switches engaged: none" in out or "kill switches engaged: " in out
    assert "BACKUP" in out
    assert re.search(r"last run: \w+", out)
    assert re.search(r"expires .* \(\d+ days\)", out)
    assert "LAST ERRORS (24h)" in out
    assert out.splitlines()[-1].startswith(("PROBLEMS: none", "  - "))
    assert result.rc == (0 if "PROBLEMS: none" in out else 1)


@pytest.fixture
def stopped_beat(host):
    host.check_output("systemctl stop shoestring-beat.service")
    yield "shoestring-beat.service"
    host.check_output("systemctl start shoestring-beat.service")


def test_a_stopped_unit_is_a_problem_and_the_exit_code_says_so(host, stopped_beat):
    result = status(host)
    assert result.rc == 1
    assert f"  - {stopped_beat} is inactive/dead" in result.stdout


@pytest.fixture
def engaged_kill_switch(host):
    code = (
        "from blocking.models import KillSwitch;"
        " KillSwitch.objects.update_or_create(task_name='blocking.status_probe',"
        " defaults={{'engaged': {engaged}, 'reason': 'status test'}}); print('ok')"
    )
    manage_shell(host, code.format(engaged=True))
    yield "blocking.status_probe"
    manage_shell(
        host,
        "from blocking.models import KillSwitch;"
        " KillSwitch.objects.filter(task_name='blocking.status_probe').delete(); print('ok')",
    )


def test_an_engaged_kill_switch_shows_with_its_reason(host, engaged_kill_switch):
    result = status(host)
    assert f"{engaged_kill_switch} (status test)" in result.stdout
    assert f"  - kill switch engaged: {engaged_kill_switch}" in result.stdout
    assert result.rc == 1


def test_the_last_backup_is_shown_once_one_ran(host):
    assert host.run("systemctl start shoestring-backup.service").rc == 0
    out = wait_until(lambda: "last /var/backups/shoestring/" in status(host).stdout, 10)
    assert out
    assert re.search(
        r"last /var/backups/shoestring/shoestring-\S+\.dump \([0-9.]+ MiB\), \d+s ago; \d+ kept",
        status(host).stdout,
    )
