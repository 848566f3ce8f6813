"""Loopback port helpers: every server the harness starts listens on 127.0.0.1 only."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on host right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Tell whether port can be bound on host (False for privileged ports when not root)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Without SO_REUSEADDR a port in TIME_WAIT counts as taken, although servers (which set it) can bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: list[int] | tuple[int, ...] = (), host: str = LOOPBACK) -> int:
    """Return the first preferred port that is free, else any free port."""
    for port in preferred:
        if port_is_free(port, host):
            return port
    return free_port(host)


def can_connect(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Tell whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_free(port: int, timeout: float, host: str = LOOPBACK) -> bool:
    """Wait until nothing accepts connections on port (a stopped server's socket is gone); bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not can_connect(port, host, timeout=0.2):
            return True
        time.sleep(0.05)
    return False
