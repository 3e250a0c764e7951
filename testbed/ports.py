"""Free loopback TCP ports: the one helper the test bed, the tests and the benchmarks use."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it; bind it soon)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that are free now. Each socket stays bound until
    all are picked: ports asked for one at a time can repeat (the OS may hand out a port again as
    soon as its socket closes; Ray refuses to start when two of its components get the same one)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port_block(size: int = 100, low: int = 20000, high: int = 29000) -> tuple[int, int]:
    """A block of ``size`` ports in [low, high) whose every tenth port is free now (e.g. for Ray's
    worker processes); returns (first, last)."""
    for _ in range(50):
        first = random.randrange(low, high, size)
        taken = False
        for port in range(first, first + size, 10):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    taken = True
                    break
        if not taken:
            return first, first + size - 1
    raise OSError(f"no free block of {size} ports between {low} and {high}")
