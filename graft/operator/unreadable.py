"""FineTunePolicies the operator cannot parse fail closed (pure; no I/O).

A policy that fails validation (say, written for a newer operator, or edited past the CRD's schema)
is never ignored: `read_policy` returns an `UnreadablePolicy`, and admission refuses every job and
endpoint in the namespaces it would have governed, naming the policy and why. When even its
namespaceSelector cannot be read, it governs every namespace: nothing runs until it is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from graft.api.policy import FineTunePolicy, LabelSelector

MAX_REASON = 300  # characters of the validation error quoted in a refusal


@dataclass(frozen=True)
class UnreadablePolicy:
    """name: the policy. reason: why it does not parse. selector: its namespaceSelector when that
    parses (None: absent, every namespace). everywhere: the selector itself is unreadable."""

    name: str
    reason: str
    selector: LabelSelector | None = None
    everywhere: bool = False

    def governs(self, namespace_labels: dict[str, str]) -> bool:
        return self.everywhere or self.selector is None or self.selector.matches(namespace_labels)


def _reason(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    text = "; ".join(parts)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def read_policy(doc: dict[str, Any]) -> FineTunePolicy | UnreadablePolicy:
    """The parsed policy, or what admission needs to refuse in its place. `doc` has apiVersion, kind,
    metadata.name and spec as read from the API server."""
    try:
        return FineTunePolicy.model_validate(doc)
    except ValidationError as exc:
        reason = _reason(exc)
    name = str((doc.get("metadata") or {}).get("name") or "(unnamed)")
    spec = doc.get("spec")
    raw = spec.get("namespaceSelector") if isinstance(spec, dict) else {"unreadable": spec}
    if raw is None:
        return UnreadablePolicy(name, reason)
    try:
        return UnreadablePolicy(name, reason, selector=LabelSelector.model_validate(raw))
    except ValidationError:
        return UnreadablePolicy(name, reason, everywhere=True)


def unreadable_violations(namespace: str, namespace_labels: dict[str, str], unreadable: list[UnreadablePolicy]) -> list[str]:
    """One refusal per unreadable policy that would govern `namespace`."""
    out: list[str] = []
    for policy in sorted(unreadable, key=lambda p: p.name):
        if not policy.governs(namespace_labels):
            continue
        scope = ("its namespaceSelector cannot be read either, so it governs every namespace" if policy.everywhere
                 else f"it selects namespace {namespace}")
        out.append(
            f"FineTunePolicy {policy.name}: the operator cannot read this policy ({policy.reason}) and {scope}; "
            "nothing it governs runs until a cluster administrator fixes it"
        )
    return out
