"""The guard's shared pause (roles/guard/files/shoestring_guard.py, SharedPause): on the database's
host it writes its pause to the core_bulkpause row every host's bulk pool reads. Run here with the
real psql against the suite's throwaway Postgres (tests/run-pytest.sh), as a role that may only
read, insert and update that table, as the guard's is on the host (roles/guard)."""

import os
import subprocess
import uuid

import pytest

from tests.role_files import load

guard = load("guard", "shoestring_guard")

# The columns core.pause reads and the guard writes (the app's migration makes the table).
TABLE = """CREATE TABLE core_bulkpause (
    source varchar(255) PRIMARY KEY, paused boolean NOT NULL,
    reason text NOT NULL DEFAULT '', changed_at timestamptz NOT NULL)"""


def psql(database, sql):
    done = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def database():
    if "PGHOST" not in os.environ:
        pytest.fail("no Postgres: run the suite with tests/run-pytest.sh")
    name = f"guard_{uuid.uuid4().hex[:8]}"
    role = f"{name}_guard"
    psql("postgres", f"CREATE DATABASE {name}")
    # The suite's password for the guard's role: the guard logs in by peer on the host.
    password = os.environ["PGPASSWORD"].replace("'", "''")
    psql(name, TABLE)
    psql(name, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    psql(name, f"GRANT SELECT, INSERT, UPDATE ON core_bulkpause TO {role}")
    yield name, role
    psql("postgres", f"DROP DATABASE {name}")
    psql("postgres", f"DROP ROLE {role}")


def rows(name):
    return psql(name, "SELECT source, paused, reason FROM core_bulkpause ORDER BY source")


def test_a_pause_and_a_resume_reach_the_table(database):
    name, role = database
    shared = guard.SharedPause(name, role, "db-1")
    assert shared.write(True, "guard: PAUSE bulk work: burst balance 29% (it's low)")
    assert rows(name) == "db-1|t|guard: PAUSE bulk work: burst balance 29% (it's low)"
    assert shared.write(False, "")
    assert rows(name) == "db-1|f|"


def test_each_host_has_its_own_row(database):
    name, role = database
    guard.SharedPause(name, role, "db-1").write(True, "low")
    guard.SharedPause(name, role, "db-2").write(False, "")
    assert rows(name) == "db-1|t|low\ndb-2|f|"


def test_an_unchanged_state_is_not_written_again(database):
    name, role = database
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.run(command, **kwargs)

    shared = guard.SharedPause(name, role, "db-1", run=run)
    shared.write(True, "low")
    shared.write(True, "still low")
    assert len(calls) == 1
    assert rows(name) == "db-1|t|low"


def test_a_failed_write_is_tried_again(database, capsys):
    name, role = database
    shared = guard.SharedPause(name, role, "db-1")
    psql(name, f"REVOKE INSERT ON core_bulkpause FROM {role}")
    assert not shared.write(True, "low")
    assert "could not share the pause through the database" in capsys.readouterr().out
    psql(name, f"GRANT INSERT ON core_bulkpause TO {role}")
    assert shared.write(True, "low")
    assert rows(name) == "db-1|t|low"


def test_without_a_database_nothing_is_run():
    def run(command, **kwargs):
        raise AssertionError(f"ran {command}")

    shared = guard.SharedPause("", "shoestring_guard", "box", run=run)
    assert shared.write(True, "low")
    assert shared.describe() == "the pause stays on this host"
