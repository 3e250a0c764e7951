"""Causal-LM SFT through `graft run` on a real local Ray: the real SmolLM2-135M-Instruct with LoRA on the
shipped instruction data; the loss on held-out chats goes down, the exported model is merged, and
the official OpenAI client talks to the endpoint (streamed and not)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_graft_run import ENDPOINT_LINE, GRAFT, Output
from tests.llm_assets import MODEL_SOURCE, TRAIN_SOURCE, VALIDATION_SOURCE

pytestmark = pytest.mark.e2e
NAME = "smol-e2e"


def job_doc() -> dict[str, Any]:
    return {
        "apiVersion": "graft.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": NAME},
        "spec": {
            "task": "causal-lm",
            "model": {"source": MODEL_SOURCE},
            "dataset": {"source": TRAIN_SOURCE, "validation": {"source": VALIDATION_SOURCE}},
            "training": {
                "epochs": 1, "batchSize": 4, "learningRate": 1e-3, "maxSeqLength": 128, "maxStepsPerEpoch": 4,
                "precision": "auto", "lora": {"r": 8, "alpha": 16},
            },
            "resources": {"workers": 1, "cpusPerWorker": 1},
            "tuning": {"metric": "eval_loss", "numTrials": 1},
            "serving": {"minReplicas": 1, "maxReplicas": 1, "maxTokens": 32},
        },
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Output, Path]]:
    tmp = tmp_path_factory.mktemp("causal-lm")
    spec = tmp / "job.yaml"
    spec.write_text(yaml.safe_dump(job_doc()))
    run_dir = tmp / "run"
    proc = subprocess.Popen(
        [*GRAFT, "run", str(spec), "--run-dir", str(run_dir), "--plain", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (as in a terminal: Ctrl-C reaches it)
    )
    output = Output(proc)
    try:
        url = output.wait_for(ENDPOINT_LINE, timeout=1500, proc=proc).group(1)
        yield url, output, run_dir
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def base_model_eval_loss() -> float:
    """The eval loss of the untrained model on the same held-out chats, with the same task code."""
    import numpy as np
    import torch

    from graft.api.spec import FineTuneJobSpec
    from graft.jobs.sources import resolve_source
    from graft.jobs.tasks.base import VALID
    from graft.jobs.tasks.causal_lm import CausalLM

    spec = FineTuneJobSpec.model_validate(job_doc()["spec"])
    task = CausalLM(spec)
    path = resolve_source(MODEL_SOURCE)
    data = task.prepare(task.load(), path)
    model = task.build_model(path, data).eval()
    idx = np.arange(data.validation_rows)
    batch = task.collate(data.validation, idx, data)
    batch[VALID] = torch.ones(len(idx), dtype=torch.bool)
    with torch.no_grad():
        return task.metrics(task.eval_sums(model, batch))["eval_loss"]


def result(run_dir: Path) -> Any:
    from graft.api.result import TrainingResult

    return TrainingResult.model_validate_json((run_dir / "result.json").read_text())


def test_sft_lowers_the_loss_on_held_out_chats(served: tuple[str, Output, Path]) -> None:
    _, _, run_dir = served
    trained = result(run_dir).best_metrics
    assert trained["eval_loss"] < base_model_eval_loss()
    assert trained["eval_perplexity"] > 1


def test_the_exported_model_has_lora_merged_into_plain_weights(served: tuple[str, Output, Path]) -> None:
    _, _, run_dir = served
    model = Path(result(run_dir).model_uri)
    assert (model / "model.safetensors").is_file() and (model / "tokenizer_config.json").is_file()
    assert not (model / "adapter_config.json").exists()


def test_the_openai_client_gets_a_completion(served: tuple[str, Output, Path]) -> None:
    from openai import OpenAI

    url, _, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is the capital of Peru?"}], max_tokens=16, temperature=0
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 16


def test_the_openai_client_streams_a_completion(served: tuple[str, Output, Path]) -> None:
    from openai import OpenAI

    url, _, _ = served
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Spell 'lamp' backwards."}], max_tokens=16, temperature=0.7, seed=1,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_a_bad_request_is_a_400_the_client_reports(served: tuple[str, Output, Path]) -> None:
    import openai

    url, _, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=10_000)
