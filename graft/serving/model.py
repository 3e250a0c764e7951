"""Load an exported sequence-classification model and classify texts with it (torch, eval mode)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.jobs.sources import SourceError, resolve_source
from graft.serving.args import ServeArgs

# torch and transformers are imported where the model is loaded, so that importing the app (Serve's
# build step, which runs in a fresh worker process for every deploy) stays fast.
if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class ModelLoadError(RuntimeError):
    """The model directory cannot be served; the message names the file or field to fix."""


def resolve_model_dir(uri: str) -> Path:
    """A local directory for `modelUri`: a path, file://, package://, hf:// or fsspec URI (graft.jobs.sources)."""
    try:
        path = resolve_source(uri, field="args.modelUri", kind="model")
    except SourceError as exc:
        raise ModelLoadError(str(exc)) from exc
    if not path.is_dir():
        raise ModelLoadError(f"args.modelUri: {uri!r} resolves to {path}, which is not a directory; point it at an exported Hugging Face model directory")
    return path


def label_names_of(model_dir: Path, override: list[str] | None) -> list[str]:
    """Label names in label-id order: the override if given, else config.json's id2label."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{model_dir} has no config.json; export the model with save_pretrained")
    config: dict[str, Any] = json.loads(config_file.read_text())
    id2label: dict[str, str] = config.get("id2label") or {}
    num_labels = len(id2label) if id2label else int(config.get("num_labels", 0) or 0)
    if override is not None:
        if num_labels and len(override) != num_labels:
            raise ModelLoadError(
                f"labelNames has {len(override)} names but the model has {num_labels} labels; list exactly {num_labels}"
            )
        return list(override)
    if not id2label:
        raise ModelLoadError(f"{config_file} has no id2label; export it with label names or pass labelNames in the args")
    try:
        by_id = sorted((int(i), name) for i, name in id2label.items())
    except ValueError as exc:
        raise ModelLoadError(f"{config_file}: id2label keys must be label ids (0, 1, ...): {exc}") from exc
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise ModelLoadError(f"{config_file}: id2label ids must be 0..{len(by_id) - 1}, got {[i for i, _ in by_id]}")
    return [name for _, name in by_id]


def pick_device(requested: str) -> torch.device:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {requested!r} was asked for but CUDA is not available; use device: auto or cpu")
    return torch.device(requested)


def inference_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 where asked, or (auto) on a GPU that supports it; fp32 otherwise."""
    import torch

    if precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float32


@dataclass
class LoadedModel:
    model_dir: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    label_names: list[str]
    device: torch.device
    max_seq_length: int

    @classmethod
    def load(cls, args: ServeArgs, model_dir: Path, threads: int) -> LoadedModel:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        labels = label_names_of(model_dir, args.label_names)
        device = pick_device(args.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=args.trust_remote_code)
            model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
        if model.config.num_labels != len(labels):
            raise ModelLoadError(f"the model has {model.config.num_labels} labels but {len(labels)} label names were given")
        model.to(device, dtype=inference_dtype(args.precision, device))
        model.eval()
        return cls(model_dir, model, tokenizer, labels, device, args.max_seq_length)

    def probabilities(self, texts: list[str]) -> list[list[float]]:
        """Softmax scores per label for each text, in one forward pass."""
        import torch

        batch = encode_truncated(self.tokenizer, texts, self.max_seq_length).to(self.device)
        with torch.inference_mode():
            logits = self.model(**batch).logits
        return torch.softmax(logits.float(), dim=-1).cpu().tolist()


# A generous bound on characters per token: texts are cut to max_seq_length x this (at a space)
# before tokenising, so a 20000-character text costs what its first tokens cost.
CHARS_PER_TOKEN = 12


def cut_text(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars` characters, at the last space before the limit (whole words only)."""
    if len(text) <= max_chars:
        return text
    space = text.rfind(" ", 0, max_chars)
    return text[: space if space > 0 else max_chars]


def encode_truncated(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    """The same tensors as `tokenizer(texts, truncation=True, max_length=...)`, without tokenising what is cut away.

    Each text is first cut to `max_length * CHARS_PER_TOKEN` characters at a word boundary. A cut
    text that still overflows `max_length` tokens gives exactly the tokens of the whole text
    (truncation keeps only whole words that lie before the cut); one that does not (e.g. long runs
    of spaces) is tokenised again whole. Slow (non-Rust) tokenizers report no overflow: they get
    the whole texts.
    """
    kwargs = {"padding": True, "truncation": True, "max_length": max_length, "return_tensors": "pt"}
    if not getattr(tokenizer, "is_fast", False):
        return tokenizer(texts, **kwargs)
    cut = [cut_text(t, max_length * CHARS_PER_TOKEN) for t in texts]
    if all(c is t for c, t in zip(cut, texts)):
        return tokenizer(texts, **kwargs)
    enc = tokenizer(cut, **kwargs)
    if any(c is not t and not e.overflowing for c, t, e in zip(cut, texts, enc.encodings)):
        return tokenizer(texts, **kwargs)
    return enc
