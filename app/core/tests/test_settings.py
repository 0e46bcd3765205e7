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
