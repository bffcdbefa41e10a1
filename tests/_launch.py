"""Helpers of the tests that start several processes (torchrun)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous: parallel test runs must not collide)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
