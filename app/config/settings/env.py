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


def env_choice(name, choices):
    """One of `choices`, or "" when unset or empty."""
    value = env(name, "")
    if value and value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# Where a test network may put a fake Bluesky: the private ranges (RFC 1918 and IPv6's unique
# local addresses), never a public address or the link-local one cloud metadata answers on.
TEST_NETWORK_RANGES = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def env_test_networks(name):
    """A comma-separated list of CIDRs inside the private ranges, as ip_network objects."""
    networks = []
    for cidr in env_list(name, ""):
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must be comma-separated CIDRs like 172.30.0.0/24, got {cidr!r}"
            ) from None
        if not any(
            network.subnet_of(private)
            for private in TEST_NETWORK_RANGES
            if private.version == network.version
        ):
            raise ImproperlyConfigured(
                f"{name} may name only private test networks (10.0.0.0/8, 172.16.0.0/12,"
                f" 192.168.0.0/16, fc00::/7), got {cidr!r}"
            )
        networks.append(network)
    return tuple(networks)


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
