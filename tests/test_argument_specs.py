"""Every role's meta/argument_specs.yml and defaults/main.yml say the same thing: each
default is a documented, typed option, and where both give a value it is the same one
(node_exporter's CI keeps its role honest the same way)."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(path.parent.parent for path in Path("roles").glob("*/meta/argument_specs.yml"))


def specs(role):
    """Option name -> its spec, over every entry point of the role."""
    entry_points = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    options = {}
    for entry_point in entry_points["argument_specs"].values():
        options.update(entry_point.get("options", {}))
    return options


def defaults(role):
    return yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}


def test_every_role_has_both_files():
    with_defaults = {path.parent.parent for path in Path("roles").glob("*/defaults/main.yml")}
    assert ROLES, "no role found: run from the repository's root"
    assert set(ROLES) == with_defaults


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_every_default_is_a_documented_typed_option(role):
    options = specs(role)
    undocumented = sorted(set(defaults(role)) - set(options))
    assert not undocumented, f"{role.name}: defaults/main.yml sets options the spec lacks"
    for name, spec in options.items():
        assert spec.get("description"), f"{role.name}: {name} has no description"
        assert spec.get("type"), f"{role.name}: {name} has no type"


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.name)
def test_a_default_in_the_spec_is_the_default_the_role_uses(role):
    values = defaults(role)
    for name, spec in specs(role).items():
        if "default" not in spec:
            continue
        # A default only the spec gives would be documented and never applied.
        assert name in values, f"{role.name}: {name}'s default is in the spec alone"
        assert spec["default"] == values[name], f"{role.name}: {name}'s defaults disagree"
