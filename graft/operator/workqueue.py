"""A work queue of object keys, as controllers have: each key is queued at most once, processed by
one worker at a time (an event arriving meanwhile queues it again afterwards), and may be
re-queued after a delay. Watch handlers only add keys, so they never wait on the API server."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable


class WorkQueue:
    def __init__(self, process: Callable[[Hashable], float | None], workers: int = 8, name: str = "graft-worker") -> None:
        """`process(key)` returns seconds after which to look at the key again (None: only on events)."""
        self.process, self.workers, self.name = process, workers, name
        self._cond = threading.Condition()
        self._ready: deque[Hashable] = deque()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # the one pending delayed time per key (earlier wins)
        self._seq = 0
        self._stop = False
        self._threads: list[threading.Thread] = []
        self.last_beat = time.monotonic()

    def add(self, key: Hashable) -> None:
        with self._cond:
            if key in self._active:
                self._dirty.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` in `delay` seconds; a key has at most one pending delay (the earliest)."""
        when = time.monotonic() + delay
        with self._cond:
            if key in self._due and self._due[key] <= when:
                return
            self._due[key] = when
            self._seq += 1
            heapq.heappush(self._delayed, (when, self._seq, key))
            self._cond.notify()

    def alive(self) -> bool:
        """Every worker is running (the liveness probe fails otherwise, and the pod is restarted)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def __len__(self) -> int:
        """Keys waiting: ready now, or with a pending delay."""
        with self._cond:
            return len(self._queued | set(self._due))

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    def _next(self) -> Hashable | None:
        with self._cond:
            while not self._stop:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    when, _, key = heapq.heappop(self._delayed)
                    if self._due.get(key) != when:
                        continue  # superseded by an earlier delay, or the key ran meanwhile
                    del self._due[key]
                    if key not in self._queued and key not in self._active:
                        self._queued.add(key)
                        self._ready.append(key)
                    elif key in self._active:
                        self._dirty.add(key)
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._active.add(key)
                    self._due.pop(key, None)  # this run replaces a pending delayed one; it returns its own delay
                    return key
                timeout = (self._delayed[0][0] - now) if self._delayed else 1.0
                self._cond.wait(timeout=min(max(timeout, 0.001), 1.0))
                self.last_beat = time.monotonic()
            return None

    def _done(self, key: Hashable) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                if key not in self._queued:
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def _run(self) -> None:
        while (key := self._next()) is not None:
            try:
                again = self.process(key)  # failures come back as a delay (graft.operator.guard); only a BaseException ends the worker
            finally:
                self._done(key)
            if again is not None:
                self.add_after(key, again)
            self.last_beat = time.monotonic()
