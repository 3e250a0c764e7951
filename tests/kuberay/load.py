"""Closed-loop HTTP load against a Serve endpoint, for the promotion and autoscaling stages of the
flagship: each client thread POSTs /predict back to back until stopped; answers are counted by the
model version that gave them, and every failure (connection error, timeout, non-200) is kept."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from types import TracebackType

TEXT = "A wonderful, moving film. Brilliant acting and a beautiful story. I loved it."


class Load:
    def __init__(self, url: str, clients: int = 1, pause: float = 0.0, timeout: float = 30.0) -> None:
        self.url, self.clients, self.pause, self.timeout = f"{url.rstrip('/')}/predict", clients, pause, timeout
        self.versions: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started = self.stopped = 0.0

    def _one(self) -> None:
        body = json.dumps({"text": TEXT}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"content-type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                version = int(json.loads(resp.read()).get("model_version") or 0)
            with self._lock:
                self.versions[version] += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
            with self._lock:
                self.failures.append(f"{time.monotonic() - self.started:.1f}s: {exc}")
            time.sleep(0.2)  # a refused connection must not spin

    def _client(self) -> None:
        while not self._stop.is_set():
            self._one()
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 5)
        self.stopped = time.monotonic()

    def answered(self, version: int) -> int:
        with self._lock:
            return self.versions[version]

    def summary(self) -> str:
        return f"{sum(self.versions.values())} answered {dict(self.versions)}, {len(self.failures)} failed {self.failures[:5]}"
