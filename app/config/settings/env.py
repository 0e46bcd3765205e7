"""Read settings from the environment, failing loudly when a required one is missing."""

import os

from django.core.exceptions import ImproperlyConfigured


def env(name, default=None, *, required=False):
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(
                f"The environment variable {name} is not set. On the appliance it comes from "
                "/etc/shoestring/shoestring.env, written by ansible-playbook site.yml."
            )
        return default
    return value


def env_list(name, default=""):
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def env_int(name, default):
    value = env(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
