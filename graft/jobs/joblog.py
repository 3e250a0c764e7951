"""`<job dir>/job.log`: the job's own log lines, kept on durable storage beside result.json.

The driver's `[graft] ...` lines (one per phase, epoch, trial, resume) and the final
`GRAFT_RESULT` line are collected and the whole file is rewritten at most every few seconds and
at the end (object storage has no append; the file stays small: it never holds Ray's worker
output). `graft logs` reads it when the Ray cluster that ran the job is gone. A later attempt of the
same job appends to what the earlier ones wrote. Writing it never fails the job: a storage error is
reported once on stderr.
"""

from __future__ import annotations

import sys
import time

from graft import storage

FLUSH_INTERVAL_S = 5.0


class JobLog:
    def __init__(self, uri: str, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.uri = uri
        self.interval_s = interval_s
        self.lines: list[str] = []
        self._flushed = 0.0
        self._broken = False
        try:
            if storage.exists(uri):
                self.lines = storage.read_text(uri).splitlines()
        except OSError as exc:
            self._report(exc)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if time.monotonic() - self._flushed >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if self._broken:
            return
        try:
            storage.write_text(self.uri, "\n".join(self.lines) + "\n")
        except OSError as exc:
            self._report(exc)

    def _report(self, exc: OSError) -> None:
        self._broken = True
        print(f"[graft] cannot keep the job log at {self.uri}: {exc}", file=sys.stderr, flush=True)
