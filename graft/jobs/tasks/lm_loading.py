"""Load a causal LM and its tokenizer from a resolved source: a Hugging Face directory or a GGUF file.

A `.gguf` file (or a directory holding exactly one `.gguf` and no `config.json`) is loaded with
transformers' `gguf_file=`, which dequantizes the weights into a normal model, and the result is
cached as a Hugging Face directory (`materialize`); hub ids, local
directories and fsspec URIs go through `graft.jobs.sources.resolve_source` first, as for every task.
Used by training (graft.jobs.tasks.causal_lm) and serving (graft.serving.generation).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from graft.jobs.tasks.chat_format import ensure_chat_template


class ModelSourceError(ValueError):
    """The source is not a loadable causal LM; the message says what is there and what to give."""


def locate(path: Path) -> tuple[Path, str | None]:
    """(directory to load from, GGUF file name or None) for a resolved model source."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(f"{path} is a file but not a .gguf; give a Hugging Face model directory or a .gguf file")
        return path.parent, path.name
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0]
    if ggufs:
        raise ModelSourceError(f"{path} holds several GGUF files ({', '.join(ggufs)}); name one in the source, e.g. {path / ggufs[0]}")
    raise ModelSourceError(f"{path} has no config.json and no .gguf file; give a Hugging Face model directory or a .gguf file")


def gguf_cache_dir(gguf: Path) -> Path:
    """Where the Hugging Face form of a GGUF file is kept: `$GRAFT_CACHE_DIR` (or ~/.cache/graft/sources)/gguf/<key>."""
    from graft.jobs.sources import cache_root

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def materialize(path: Path, trust_remote_code: bool = False) -> Path:
    """A Hugging Face directory for `path`: itself, or for a GGUF file its dequantized copy (made once).

    Dequantizing and converting the GGUF tokenizer takes seconds to tens of seconds; every later
    load (each Train worker, each serving replica) reads the cached safetensors instead. Concurrent
    callers each write a private staging directory and the first rename wins.
    """
    directory, gguf = locate(path)
    if gguf is None:
        return directory
    cached = gguf_cache_dir(directory / gguf)
    if (cached / "config.json").is_file():
        return cached
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = cached.with_name(f".{cached.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    kwargs: dict[str, Any] = {"gguf_file": gguf, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
    ensure_chat_template(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch_float32(), **kwargs)
    # The weights are dequantized already; transformers still marks the model as GGUF-quantized
    # and refuses to save it. Drop the marker so the plain fp32 weights are saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    try:
        staging.rename(cached)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def torch_float32() -> Any:
    import torch

    return torch.float32


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    directory = materialize(path, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    ensure_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model(path: Path, *, dtype: Any = None, quantization: str = "none", trust_remote_code: bool = False, device_map: Any = None) -> Any:
    """The model in `dtype` (default fp32); `quantization="4bit"` loads NF4 weights (bitsandbytes, GPU only)."""
    import torch
    from transformers import AutoModelForCausalLM

    directory = materialize(path, trust_remote_code)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype or torch.float32}
    if quantization == "4bit":
        if not torch.cuda.is_available():
            raise ModelSourceError("quantization: 4bit (QLoRA) needs a CUDA GPU; this worker has none")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype or torch.bfloat16
        )
        kwargs["device_map"] = device_map or {"": torch.cuda.current_device()}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    return AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
