"""`graft run` for causal-LM jobs: one sample chat completion against the new OpenAI-compatible endpoint."""

from __future__ import annotations

import json

from graft.api import FineTuneJob
from graft.cli.console import RunConsole


def held_out_question(job: FineTuneJob) -> tuple[list[dict[str, str]], str | None]:
    """The first validation chat up to its last assistant turn, and that reply (the expected answer)."""
    from graft.jobs.tasks.chat_data import load_chat_dataset

    chat = load_chat_dataset(job.spec.dataset).validation[0]
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    return chat[:last], chat[last]["content"]


def sample(job: FineTuneJob, url: str, console: RunConsole, text: str | None = None) -> None:
    """Ask the endpoint one question (greedy, like `temperature: 0`) and show the answer."""
    import httpx

    messages, expected = ([{"role": "user", "content": text}], None) if text else held_out_question(job)
    body = {"model": job.metadata.name, "messages": messages, "max_tokens": min(64, job.spec.serving.max_tokens), "temperature": 0}
    response = httpx.post(f"{url.rstrip('/')}/v1/chat/completions", json=body, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"the sample request to {url}/v1/chat/completions got HTTP {response.status_code}: {response.text[:500]}")
    answer = response.json()["choices"][0]["message"]["content"]
    console.console.print(f"[bold green]endpoint[/] {url}/v1  (OpenAI-compatible: POST /v1/chat/completions, /v1/completions; GET /v1/models)", highlight=False)
    console.info(f"sample: {messages[-1]['content']!r}")
    console.console.print(f"    reply: {answer!r}" + (f"  (reference: {expected!r})" if expected else ""), highlight=False)
    example = json.dumps({"model": job.metadata.name, "messages": [{"role": "user", "content": "What is the capital of Peru?"}]})
    console.info(f"try: curl -s {url.rstrip('/')}/v1/chat/completions -H 'content-type: application/json' -d '{example}'")
    console.info(f"or any OpenAI client with base_url={url.rstrip('/')}/v1 and model={job.metadata.name!r}")
