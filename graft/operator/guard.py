"""The per-object boundary: one object's trouble never stops the operator.

`attempt` runs one unit of work (reconciling one object, sweeping one shared cluster, one resync
pass) and returns what went wrong instead of raising it, so the worker or resync thread that called
it goes on with the next one. Expected failures (the API server, a Ray dashboard or storage being
unreachable) come back marked as such and are retried at a fixed interval; anything else is a bug
or an input nobody foresaw: logged with its traceback, recorded on the object by the caller (a
`Reconciled` condition with reason `ReconcileError` and one Event) and retried with exponential
backoff (`Backoff`), capped at `MAX_BACKOFF_SECONDS`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from graft.api.status import Condition
from graft.operator.metrics import METRICS
from graft.operator.status import iso, set_condition

log = logging.getLogger("graft.operator")
T = TypeVar("T")

RETRY_SECONDS = 10.0  # an expected failure (unreachable API server, dashboard or storage): look again soon
FIRST_BACKOFF_SECONDS = 10.0  # an unexpected one: 10 s, 20 s, 40 s, ... up to the cap
MAX_BACKOFF_SECONDS = 300.0
MAX_ERROR_MESSAGE = 1024  # characters of the exception text kept in the condition and the Event
RECONCILED = "Reconciled"  # condition type, present (status False) only while reconciling the object fails
RECONCILE_ERROR = "ReconcileError"


@dataclass(frozen=True)
class Failed:
    """What `attempt` caught: the exception, and whether it is one the caller expects."""

    error: BaseException
    expected: bool


def attempt(what: str, action: Callable[[], T], expected: tuple[type[BaseException], ...] = ()) -> T | Failed:
    """`action()`'s value, or the exception it raised as `Failed` (unexpected ones logged with
    their traceback, naming `what`)."""
    try:
        return action()
    except expected as exc:
        return Failed(exc, expected=True)
    # The one broad catch of the operator (the style rule forbids them elsewhere): this is the
    # boundary of one object's work. Whatever a tenant's object makes the code raise (a KeyError
    # on an odd answer, a TypeError on a scheme nobody handles) must end that object's pass only,
    # never the thread that serves every other tenant. BaseException (KeyboardInterrupt,
    # SystemExit) still ends the thread, and the liveness probe sees it.
    except Exception as exc:  # noqa: BLE001 - the per-object boundary, see above
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
        return Failed(exc, expected=False)


def settle(backoff: Backoff, key: tuple[str, str, str], outcome: T | Failed, record: Callable[[str, bool], None]) -> T | float:
    """After one object's pass (key: kind, namespace, name): count it, and say when to look again.
    An expected failure: in RETRY_SECONDS. An unexpected one: `record(message, first)` puts it on
    the object (`first`: the first failure since the last pass that got through), and the next try
    waits `backoff`'s growing delay."""
    kind, namespace, name = key
    if not isinstance(outcome, Failed):
        backoff.succeeded(key)
        METRICS.record_reconcile(kind, "success")
        return outcome
    METRICS.record_error(kind, outcome.error)
    if outcome.expected:
        log.warning("%s %s/%s: %s (retrying in %.0fs)", kind, namespace, name, outcome.error, RETRY_SECONDS)
        METRICS.record_reconcile(kind, "retry")
        return RETRY_SECONDS
    METRICS.record_reconcile(kind, "error")
    delay = backoff.failed(key)
    record(error_message(outcome.error, delay), backoff.failures(key) == 1)
    return delay


def error_message(exc: BaseException, delay: float) -> str:
    """`TypeName: text (retrying in N s)`, the text cut to MAX_ERROR_MESSAGE characters."""
    text = str(exc)
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[:MAX_ERROR_MESSAGE] + f"... [{len(text) - MAX_ERROR_MESSAGE} characters cut]"
    return f"{type(exc).__name__}: {text} (retrying in {delay:.0f}s)"


def with_error(conditions: list[Condition], message: str | None, now: datetime, generation: int | None) -> list[Condition]:
    """The conditions with the `Reconciled` condition set to False with `message`, or dropped
    when `message` is None (the pass went through)."""
    if message is None:
        return [c for c in conditions if c.type != RECONCILED]
    return set_condition(conditions, RECONCILED, "False", RECONCILE_ERROR, message, iso(now), generation)


class Backoff:
    """Consecutive unexpected failures per key, and the delay before the next try. The resync asks
    `waiting` so its periodic pass does not undo the delay (a watch event of a real change does)."""

    def __init__(self, first: float = FIRST_BACKOFF_SECONDS, cap: float = MAX_BACKOFF_SECONDS) -> None:
        self.first, self.cap = first, cap
        self._failures: dict[Hashable, int] = {}
        self._until: dict[Hashable, float] = {}  # monotonic time before which the key waits
        self._lock = threading.Lock()

    def failed(self, key: Hashable) -> float:
        """Count one more failure of `key`; the seconds to wait before trying it again."""
        with self._lock:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
            delay = min(self.cap, self.first * 2 ** min(n - 1, 32))
            self._until[key] = time.monotonic() + delay
        return delay

    def waiting(self, key: Hashable) -> bool:
        """Whether `key` failed and its delay has not passed yet."""
        with self._lock:
            return time.monotonic() < self._until.get(key, 0.0)

    def succeeded(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)
            self._until.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._lock:
            return self._failures.get(key, 0)
