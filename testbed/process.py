"""The one process wrapper of the test bed, and ``wait_until``.

:class:`Process` is a local process with its own log file (stdout and stderr), by default in a new
session (its own process group, so a stop reaches what it forks), optionally killed by the kernel
when this Python process dies (``die_with_parent``: Linux ``PR_SET_PDEATHSIG``), stopped with
SIGTERM and, after a timeout, SIGKILL.

    proc = Process("etcd", [str(bin_dir / "etcd"), ...], logs / "etcd.log", die_with_parent=True).start()
    proc.wait_ready(lambda: healthy(), timeout=60)   # raises ProcessError (with the log tail) if it exits
    proc.stop()

Standard library only (scripts/cluster.sh runs the test bed with any Python 3.11).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ProcessError(RuntimeError):
    """A process exited or did not become ready; the message carries its log tail."""


def wait_until(
    fn: Callable[[], T], timeout: float = 60.0, interval: float = 0.2, what: str | Callable[[], str] = "condition",
    *, retry: tuple[type[BaseException], ...] = (Exception,),
) -> T:
    """Poll ``fn`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    An exception of a ``retry`` type counts as "not yet" (the last one is named in the
    TimeoutError); others propagate at once (``retry=()``: every exception does). ``what`` names
    the condition in the TimeoutError; a callable is called then, to describe the state."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last: object = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except retry as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            if last_exc is not None:
                detail = f": last error: {last_exc!r}"
            else:
                detail = f"; last value: {last!r}" if last not in (None, False) else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {described}{detail}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when the process that started it dies (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def log_tail(path: Path, lines: int = 40, *, skip: str | None = None, window: int = 256 * 1024) -> str:
    """The last ``lines`` lines of a log file (read from its last ``window`` bytes), without the
    lines containing ``skip``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - window))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log {path})"
    keep = [ln for ln in text.splitlines() if skip is None or skip not in ln]
    return "\n".join(keep[-lines:])


class Process:
    """One local process writing stdout and stderr to ``log``.

    ``env``: its whole environment (default: this process's). ``new_session``: its own session and
    process group; signals then go to the group. ``die_with_parent``: the kernel SIGKILLs it when
    this process dies. ``log_mode``: "ab" appends to the log, "wb" starts it afresh."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, new_session: bool = True, die_with_parent: bool = False,
                 log_mode: str = "ab") -> None:
        self.name, self.argv, self.log = name, [str(a) for a in argv], Path(log)
        self.env = dict(env) if env is not None else None
        self.cwd, self.new_session, self.die_with_parent, self.log_mode = cwd, new_session, die_with_parent, log_mode
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with open(self.log, self.log_mode) as f:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                start_new_session=self.new_session, preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ProcessError(f"{self.name} was not started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> bool:
        """True while it runs; ProcessError (with the log tail) once it has exited."""
        if not self.running():
            raise ProcessError(f"{self.name} exited with {self.returncode}; log tail:\n{self.tail()}")
        return True

    def wait_ready(self, probe: Callable[[], object], timeout: float, interval: float = 0.25,
                   what: str = "ready") -> None:
        """Poll ``probe`` (its exceptions count as "not yet") until it is truthy; ProcessError with
        the log tail when the process exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise ProcessError(f"{self.name} exited with {self.returncode} during startup; log tail:\n{self.tail()}")
            try:
                if probe():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() >= deadline:
                raise ProcessError(f"{self.name} not {what} after {timeout:.0f}s; log tail:\n{self.tail()}")
            time.sleep(interval)

    def signal(self, sig: int, *, group: bool | None = None) -> None:
        """Send ``sig`` to the process group (default when ``new_session``; also after the leader
        exited, to what is left of the group) or to the process only (while it runs)."""
        if self.proc is None:
            return
        try:
            if self.new_session if group is None else group:
                os.killpg(self.proc.pid, sig)
            elif self.running():
                os.kill(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; subprocess.TimeoutExpired after ``timeout`` seconds."""
        if self.proc is None:
            raise ProcessError(f"{self.name} was not started")
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0, *, group: bool | None = None) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it has exited."""
        if self.running():
            self.signal(signal.SIGTERM, group=group)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(group=group)
        elif self.proc is not None:
            self.proc.wait(timeout=10)

    def kill(self, timeout: float = 10.0, *, group: bool | None = None) -> None:
        """SIGKILL (an abrupt crash, no graceful shutdown; to the group: what is left of it too) and reap it."""
        self.signal(signal.SIGKILL, group=group)
        if self.proc is not None:
            self.proc.wait(timeout=timeout)

    def tail(self, lines: int = 40, *, skip: str | None = None) -> str:
        """The last ``lines`` lines of its log."""
        return log_tail(self.log, lines, skip=skip)
