"""Every command in the runbook exists on the converged host."""

import re
import shlex
from pathlib import Path

import pytest

RUNBOOK = Path(__file__).resolve().parents[3] / "docs" / "runbook.md"
CONTROLLER_ONLY = {"ansible-playbook"}


def runbook_commands():
    text = RUNBOOK.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    commands = set()
    for line in "\n".join(blocks).splitlines():
        if line.strip():
            commands.add(shlex.split(line)[0])
    return sorted(commands - CONTROLLER_ONLY)


def test_the_runbook_names_commands():
    assert len(runbook_commands()) >= 10


@pytest.mark.parametrize("command", runbook_commands())
def test_runbook_command_exists_on_the_host(host, command):
    beat_env = host.file("/etc/shoestring/beat.env").content_string
    if command == "redis-cli" and 'CELERY_BROKER_URL="redis://' not in beat_env:
        pytest.skip("no Redis on a host whose broker is SQS")
    assert host.run("command -v %s", command).rc == 0, f"{command} is not installed"


def test_runbook_read_only_commands_run(host):
    for command in [
        "curl -sk https://localhost/healthz",
        "systemctl show -p MemoryMax shoestring-web.service",
        "journalctl --disk-usage",
        "shoestring-manage showmigrations blocking",
        "runuser -u postgres -- psql -c 'SHOW synchronous_commit'",
    ]:
        result = host.run(command)
        assert result.rc == 0, (command, result.stderr)
