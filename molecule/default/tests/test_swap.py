"""Swap resizes on a live host: the swap file is turned off, resized, formatted again and
turned on. In this container swapoff and swapon cannot work, so the play skips them and
says so; the file's size and its swap header are checked here."""

import pytest
from shoestring_host import broker_is_redis

MIB = 1024 * 1024


@pytest.fixture
def swap_back_to_2048(host, site):
    # Skipped before anything changed (its teardown would run base.yml for nothing).
    if not broker_is_redis(host):
        pytest.skip("proved once, in the default scenario")
    yield
    site("playbooks/base.yml", "--tags", "swap_configure")
    assert host.file("/swapfile").size == 2048 * MIB


def test_a_new_swap_size_resizes_and_reformats_the_swap_file(host, site, swap_back_to_2048):
    uuid_before = host.check_output("blkid -o value -s UUID /swapfile")
    _, output = site("playbooks/base.yml", "--tags", "swap_configure", "-e", "swap_size_mb=1024")
    assert "skipped in a container" in output
    swap = host.file("/swapfile")
    assert swap.size == 1024 * MIB
    assert (swap.user, swap.mode) == ("root", 0o600)
    assert host.check_output("blkid -o value -s TYPE /swapfile") == "swap"
    # mkswap ran again: a new header (new UUID) for the new size.
    assert host.check_output("blkid -o value -s UUID /swapfile") != uuid_before
