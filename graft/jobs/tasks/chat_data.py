"""Load causal-LM (SFT) data: chats in the OpenAI `messages` format, or prompt/completion pairs.

Each row becomes one conversation: a list of `{"role", "content"}` messages whose assistant turns
are the tokens trained on. A prompt/completion row becomes `[user: prompt, assistant: completion]`.
The result is plain Python lists, small enough to ship to every Ray Train worker.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from graft.api.spec import DatasetSpec
from graft.jobs.data import DataError, read_table

Message = dict[str, str]
Conversation = list[Message]
ROLES = ("system", "user", "assistant")


@dataclass
class ChatDataset:
    train: list[Conversation]
    validation: list[Conversation]
    sources: dict[str, str] = field(default_factory=dict)
    # Task-agnostic callers (preflight, the CLI) read these names; a chat dataset has no labels.
    label_names: list[str] = field(default_factory=list)

    @property
    def train_texts(self) -> list[Conversation]:
        return self.train

    @property
    def val_texts(self) -> list[Conversation]:
        return self.validation

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train), "validation": len(self.validation), "format": "chat"}


def conversation_of(row: dict[str, Any], spec: DatasetSpec, where: str) -> Conversation:
    """The row as a checked conversation; raises DataError naming the field and the fix."""
    if spec.messages_field in row and row[spec.messages_field] is not None:
        return check_messages(row[spec.messages_field], f"{where}: {spec.messages_field}")
    prompt, completion = row.get(spec.prompt_field), row.get(spec.completion_field)
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise DataError(
            "spec.dataset.messagesField",
            f"{where} has neither a {spec.messages_field!r} list nor string {spec.prompt_field!r} and {spec.completion_field!r} fields; "
            "give chat rows {\"messages\": [{\"role\": \"user\", ...}, {\"role\": \"assistant\", ...}]} or prompt/completion pairs",
        )
    if not completion.strip():
        raise DataError("spec.dataset.completionField", f"{where}: {spec.completion_field!r} is empty; every row needs a completion to train on")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def check_messages(messages: Any, where: str) -> Conversation:
    """A list of {role, content} dicts with known roles and at least one assistant turn."""
    if hasattr(messages, "tolist"):
        messages = messages.tolist()  # pandas/pyarrow give arrays for list columns
    if not isinstance(messages, list) or not messages:
        raise DataError("spec.dataset.messagesField", f"{where} must be a non-empty list of messages")
    out: Conversation = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            raise DataError("spec.dataset.messagesField", f"{where}[{i}] must be an object with string role and content")
        if msg["role"] not in ROLES:
            raise DataError("spec.dataset.messagesField", f"{where}[{i}].role is {msg['role']!r}; use one of {', '.join(ROLES)}")
        out.append({"role": msg["role"], "content": msg["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("spec.dataset.messagesField", f"{where} has no assistant message: there is nothing to train on")
    return out


def _rows(source: str, spec: DatasetSpec, field_path: str) -> tuple[list[Conversation], str]:
    df, where = read_table(source, spec, field_path)
    if spec.messages_field not in df.columns and not {spec.prompt_field, spec.completion_field} <= set(df.columns):
        cols = ", ".join(map(str, df.columns)) or "(none)"
        raise DataError(
            "spec.dataset.messagesField",
            f"{where} has no {spec.messages_field!r} column and no {spec.prompt_field!r}/{spec.completion_field!r} pair; columns present: {cols}",
        )
    for col, value in (spec.filter or {}).items():
        if col not in df.columns:
            raise DataError(f"spec.dataset.filter.{col}", f"column {col!r} is not in {where}")
        df = df[df[col].astype(str) == str(value)]
    records = df.to_dict(orient="records")
    return [conversation_of(r, spec, f"{where} row {i + 1}") for i, r in enumerate(records)], where


def load_chat_dataset(spec: DatasetSpec) -> ChatDataset:
    """Read, sample and split the chat data as the spec says (seeded)."""
    rows, where = _rows(spec.source, spec, "spec.dataset.source")
    rng = random.Random(spec.seed)
    if spec.max_samples is not None and len(rows) > spec.max_samples:
        rows = rng.sample(rows, spec.max_samples)
    sources = {"train": where}
    if spec.validation.source:
        val, vwhere = _rows(spec.validation.source, spec, "spec.dataset.validation.source")
        train = rows
        sources["validation"] = vwhere
    else:
        if len(rows) < 2:
            raise DataError("spec.dataset.source", f"{where} has {len(rows)} row(s); at least 2 are needed to split off validation")
        order = list(range(len(rows)))
        rng.shuffle(order)
        n_val = max(1, round(len(rows) * spec.validation.fraction))
        val = [rows[i] for i in order[:n_val]]
        train = [rows[i] for i in order[n_val:]]
    if not train:
        raise DataError("spec.dataset.source", f"{where} has no training rows left after splitting")
    if not val:
        raise DataError("spec.dataset.validation", f"the validation split of {where} is empty")
    return ChatDataset(train=train, validation=val, sources=sources)
