"""Read settings from the environment, failing loudly when a required one is missing."""

import ipaddress
import os
from urllib.parse import urlsplit

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


def env_flag(name, auto):
    """A true/false setting whose default "auto" takes the value computed by the caller."""
    value = env(name, "auto").lower()
    if value not in ("auto", "true", "false"):
        raise ImproperlyConfigured(f"{name} must be auto, true or false, got {value!r}")
    return auto if value == "auto" else value == "true"


def is_loopback_url(url):
    """True when the URL's host is localhost or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
