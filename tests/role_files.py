"""The Python scripts roles install on hosts (roles/<role>/files/*.py), loaded as modules so
their decisions can be tested off the host. Each call runs the file afresh."""

import importlib.util
from pathlib import Path

ROLES = Path(__file__).resolve().parents[1] / "roles"


def load(role, name):
    spec = importlib.util.spec_from_file_location(name, ROLES / role / "files" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
