"""Chat-template formatting, completion-only labels, packing and batching for causal-LM SFT.

- `encode_conversation` renders a conversation with the tokenizer's chat template and labels
  only the assistant turns (their content and the end-of-turn tokens that follow): every other
  token's label is -100, so the loss is on the completion alone.
- `pack` puts several encoded examples into rows of at most `max_len` tokens (first-fit
  decreasing); each row keeps per-example `position_ids` and segment lengths, from which the task
  builds a block-diagonal causal attention mask, so packed examples never attend to each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IGNORE = -100
# ChatML, used when a base model's tokenizer has no chat template of its own.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class Row:
    """One training row: one or several examples back to back."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    position_ids: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)  # lengths of the examples in this row

    def add(self, ex: Encoded) -> None:
        self.input_ids += ex.input_ids
        # The first token of an example is never a target: in a packed row it would otherwise be
        # predicted from the end of the previous example.
        self.labels += [IGNORE, *ex.labels[1:]]
        self.position_ids += list(range(len(ex.input_ids)))
        self.segments.append(len(ex.input_ids))

    def __len__(self) -> int:
        return len(self.input_ids)


def ensure_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (content + end of turn)."""
    full = render(tokenizer, messages)
    spans: list[tuple[int, int]] = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not full.startswith(upto) or not upto.startswith(before):
            raise ValueError("the chat template does not render conversations incrementally; cannot mask the prompt tokens")
        end = len(upto)
        # Keep the end-of-turn marker (e.g. "<|im_end|>") in the span, not the newline after it.
        while end > len(before) and upto[end - 1] in "\n ":
            end -= 1
        spans.append((len(before), end))
    return full, spans


def encode_conversation(tokenizer: Any, messages: list[dict[str, str]], max_len: int) -> Encoded:
    """Token ids of the rendered conversation and labels that are -100 outside assistant turns."""
    text, spans = assistant_spans(tokenizer, messages)
    ids: list[int] = []
    labels: list[int] = []
    cursor = 0
    for start, end in [*spans, (len(text), len(text))]:
        for piece, trained in ((text[cursor:start], False), (text[start:end], True)):
            if not piece:
                continue
            toks = tokenizer(piece, add_special_tokens=False)["input_ids"]
            ids += toks
            labels += toks if trained else [IGNORE] * len(toks)
        cursor = end
    bos = getattr(tokenizer, "bos_token_id", None)
    if getattr(tokenizer, "add_bos_token", False) and bos is not None and (not ids or ids[0] != bos):
        ids, labels = [bos, *ids], [IGNORE, *labels]
    return Encoded(ids[:max_len], labels[:max_len])


def encode_all(tokenizer: Any, conversations: list[list[dict[str, str]]], max_len: int) -> tuple[list[Encoded], int]:
    """Encode every conversation; drop those left with no trained token after truncation (count returned)."""
    out, dropped = [], 0
    for conv in conversations:
        ex = encode_conversation(tokenizer, conv, max_len)
        if ex.trained_tokens == 0:
            dropped += 1
            continue
        out.append(ex)
    return out, dropped


def pack(examples: list[Encoded], max_len: int) -> list[Row]:
    """First-fit decreasing: examples into rows of at most `max_len` tokens (order of rows is stable)."""
    rows: list[Row] = []
    for ex in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        target = next((r for r in rows if len(r) + len(ex.input_ids) <= max_len), None)
        if target is None:
            target = Row()
            rows.append(target)
        target.add(ex)
    return rows


def unpacked(examples: list[Encoded]) -> list[Row]:
    rows = []
    for ex in examples:
        row = Row()
        row.add(ex)
        rows.append(row)
    return rows
