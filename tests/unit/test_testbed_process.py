"""testbed/process.py and testbed/ports.py: the one process wrapper, wait_until and the free-port helper."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from testbed.ports import free_port, free_port_block, free_ports
from testbed.process import Process, ProcessError, wait_until

pytestmark = pytest.mark.unit


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " not in stat  # a zombie has exited


def test_stop_reaches_the_whole_process_group_and_the_log_keeps_the_output(tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    script = f"import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); open({str(child_pid)!r}, 'w').write(str(p.pid)); print('up', flush=True); time.sleep(60)"
    proc = Process("sleeper", [sys.executable, "-c", script], tmp_path / "sleeper.log").start()
    wait_until(lambda: child_pid.exists() and child_pid.read_text(), timeout=20, what="the child's pid")
    wait_until(lambda: "up" in proc.tail(), timeout=20, what="the log line")
    child = int(child_pid.read_text())
    proc.stop(timeout=5)
    assert proc.returncode is not None and not proc.running()
    wait_until(lambda: not _alive(child), timeout=10, what="the grandchild to be gone")


def test_wait_ready_fails_with_the_log_tail_when_the_process_exits(tmp_path: Path) -> None:
    proc = Process("failing", [sys.executable, "-c", "print('bad config'); raise SystemExit(3)"], tmp_path / "f.log").start()
    with pytest.raises(ProcessError, match=r"(?s)failing exited with 3.*bad config"):
        proc.wait_ready(lambda: False, timeout=20)


def test_wait_until_retries_errors_by_default_and_propagates_them_with_retry_empty() -> None:
    calls = iter([ValueError("not yet"), 0, 7])

    def step() -> int:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait_until(step, timeout=5, interval=0.01) == 7
    with pytest.raises(ValueError):
        wait_until(lambda: (_ for _ in ()).throw(ValueError("now")), timeout=5, retry=())
    with pytest.raises(TimeoutError, match=r"waiting for the answer; last value: \[\]"):
        wait_until(lambda: [], timeout=0.1, interval=0.01, what="the answer")


def test_free_ports_can_be_bound() -> None:
    for port in (free_port(), *free_port_block(20)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_ports_asked_for_together_are_all_different() -> None:
    for _ in range(20):
        ports = free_ports(10)
        assert len(set(ports)) == 10, ports
