"""roles/postgresql's TLS tasks in a --check run on a host that has no server key yet (a first
run, or an upgrade from before Postgres spoke TLS): check mode makes no key, so there is
nothing to make a signing request with, and the run must say the key would be made and go on,
not fail reading a key that does not exist. Run here by a local connection, into a temporary
directory (nothing is written: check mode)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLAY = """
- hosts: localhost
  gather_facts: true
  tasks:
    - ansible.builtin.include_role:
        name: postgresql
        tasks_from: tls
"""


def test_a_check_run_without_a_server_key_reports_it_and_signs_nothing(tmp_path):
    playbook = tmp_path / "tls.yml"
    playbook.write_text(PLAY)
    tls_dir = tmp_path / "tls"
    extra = {
        "_postgresql_tls_dir": str(tls_dir),
        "postgresql_tls_ca_dir": str(tmp_path / "no-ca"),
        "postgresql_tls_subject_alt_names": ["DNS:localhost", "IP:127.0.0.1"],
        "ansible_python_interpreter": sys.executable,
    }
    result = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            "localhost,",
            "-c",
            "local",
            str(playbook),
            "--check",
            "-e",
            json.dumps(extra),
        ],
        cwd=REPO,
        env=dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "failed=0" in output
    # The request, the signing and the certificate are skipped, not attempted.
    for task in [
        "Make the server's private key",
        "Make the signing request",
        "Sign the certificate",
    ]:
        block = output.split(f"TASK [postgresql : {task}", 1)[1].split("TASK [", 1)[0]
        assert "skipping: [localhost]" in block, (task, block)
    assert not tls_dir.exists()
