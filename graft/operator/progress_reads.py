"""Live progress of running jobs, read from storage off the reconcile path.

A job's `progress.json` sits on its storage, which the operator may reach slowly or not at all
(an object store it holds no credentials for: the S3 client then spends seconds on credential
lookups and retries before it gives up). Read inline, those seconds would hold a reconcile worker
each; with hundreds of jobs running, every worker waits on storage and nothing else is reconciled.
So a reconcile only asks for the latest snapshot read so far: `latest` answers from memory at once
and, when that snapshot is older than the interval, starts one read in a small pool of its own.
A read that brings a different snapshot calls `on_change(key)`, which queues the job again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

from graft.api.status import Progress
from graft.jobs.progress import read_progress

READERS = 2  # threads reading progress files, beside the reconcile workers


class ProgressReads:
    def __init__(self, interval: float, on_change: Callable[[Hashable], None],
                 read: Callable[[str], Progress | None] = read_progress, readers: int = READERS) -> None:
        self.interval, self.on_change, self.read = interval, on_change, read
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="graft-progress")
        self._lock = threading.Lock()
        self._latest: dict[Hashable, tuple[Progress | None, float]] = {}  # key -> (snapshot, monotonic time read)
        self._reading: set[Hashable] = set()
        self._dropped: set[Hashable] = set()  # forgotten while a read was under way: its answer is dropped

    def latest(self, key: Hashable, uri: str) -> Progress | None:
        """The last snapshot read for `key` (None before the first read ends); never waits on storage.
        Starts a read of `uri` when there is none yet, or the last is older than the interval."""
        with self._lock:
            found = self._latest.get(key)
            stale = found is None or time.monotonic() - found[1] >= self.interval
            if stale and key not in self._reading:
                self._reading.add(key)
                self._pool.submit(self._read, key, uri)
            return found[0] if found is not None else None

    def forget(self, key: Hashable) -> None:
        """Drop what is kept for `key` (the job ended or was deleted)."""
        with self._lock:
            self._latest.pop(key, None)
            if key in self._reading:
                self._dropped.add(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._latest)

    def stop(self, wait: bool = False) -> None:
        """Stop reading; `wait`: until the reads under way have ended."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _read(self, key: Hashable, uri: str) -> None:
        progress: Progress | None = None
        try:
            progress = self.read(uri)
        finally:
            with self._lock:
                self._reading.discard(key)
                dropped = key in self._dropped
                self._dropped.discard(key)
                before = self._latest.get(key)
                if not dropped:
                    self._latest[key] = (progress, time.monotonic())
        if not dropped and progress is not None and (before is None or before[0] != progress):
            self.on_change(key)
