"""The one way a test waits: poll a check until it returns something truthy, and return
that; at the deadline the test fails with the caller's message. Used by the app's tests
(app/conftest.py) and the on-host tests (molecule/default/tests/shoestring_host.py)."""

import time


def wait_until(check, timeout, interval=0.5, message="the condition never held"):
    """check() until it is truthy (its value is returned), for timeout seconds; the check
    runs once more at the deadline, so a slow last poll is not lost."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
