import os

import pytest
from conftest import run_manage


def _manage(*args, env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    env.update(env_overrides)
    return run_manage(env, *args)


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "k" * 10 + "Zq8#pL2@vN5!xR7&mT4$wY1^bH6*cJ3(eG9)fD0-sA" * 2,
            "DJANGO_ALLOWED_HOSTS": "shoestring.example.org",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = _manage(
        "check", env_overrides={"DJANGO_SETTINGS_MODULE": "config.settings.production"}
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


@pytest.mark.parametrize("value", ["five", "5.5"])
def test_a_malformed_port_is_named_in_the_error(value):
    result = _manage(
        "check",
        env_overrides={
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "s" * 60,
            "DATABASE_PORT": value,
        },
    )
    assert result.returncode != 0
    assert f"DATABASE_PORT must be a whole number, got '{value}'" in result.stderr


def _database_env(**overrides):
    """The test cluster (config.settings.test reads PG*), its always-present database."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_NAME": "postgres",
        **overrides,
    }


SSL_OF_THIS_SESSION = (
    "from django.db import connection\n"
    "with connection.cursor() as cursor:\n"
    "    cursor.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')\n"
    "    print('ssl', cursor.fetchone()[0])\n"
)


def test_the_database_sslmode_reaches_libpq():
    plain = _manage(
        "shell", "-c", SSL_OF_THIS_SESSION, env_overrides=_database_env(DATABASE_SSLMODE="disable")
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split()[-2:] == ["ssl", "False"]
    # The test cluster may or may not serve TLS: required, the session is encrypted or refused.
    required = _manage(
        "shell", "-c", SSL_OF_THIS_SESSION, env_overrides=_database_env(DATABASE_SSLMODE="require")
    )
    if required.returncode == 0:
        assert required.stdout.split()[-2:] == ["ssl", "True"]
    else:
        assert "server does not support SSL, but SSL was required" in required.stderr


def test_a_certificate_check_takes_the_ca_it_was_given(tmp_path):
    ca = tmp_path / "database-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = _manage(
        "shell",
        "-c",
        "from django.db import connection; p = connection.get_connection_params();"
        " print(p['sslmode'], p['sslrootcert'])",
        env_overrides=_database_env(DATABASE_SSLMODE="verify-full", DATABASE_SSLROOTCERT=str(ca)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["verify-full", str(ca)]


@pytest.mark.parametrize(
    ("env_overrides", "error"),
    [
        (
            {"DATABASE_SSLMODE": "required"},
            "DATABASE_SSLMODE must be one of disable, allow, prefer, require, verify-ca,"
            " verify-full, got 'required'",
        ),
        (
            {"DATABASE_SSLMODE": "verify-ca"},
            "DATABASE_SSLMODE=verify-ca checks the server's certificate: set DATABASE_SSLROOTCERT",
        ),
        (
            {"DATABASE_SSLMODE": "verify-full", "DATABASE_SSLROOTCERT": "/nonexistent/ca.crt"},
            "DATABASE_SSLROOTCERT names /nonexistent/ca.crt, which is not a file",
        ),
    ],
    ids=["an unknown mode", "no CA to check with", "a CA that is not there"],
)
def test_a_database_tls_setting_that_cannot_work_is_named_at_start_up(env_overrides, error):
    result = _manage(
        "check",
        env_overrides={
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "s" * 60,
            **env_overrides,
        },
    )
    assert result.returncode != 0
    assert error in result.stderr
