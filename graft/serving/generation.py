"""Token-by-token generation for the OpenAI routes: sampling, stop sequences, streaming deltas.

`LanguageModel.generate(request)` is a plain iterator of `Step`s (a text delta, then a final step
with the finish reason and token counts); the Serve app runs it on a worker thread and turns each
step into a server-sent event or collects them into one response.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.serving.openai_protocol import ApiError, GenerationRequest


@dataclass
class Step:
    text: str = ""
    finish: str | None = None  # "stop" or "length" on the last step
    prompt_tokens: int = 0
    completion_tokens: int = 0


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop sequence (not sent yet)."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep


def find_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def sample(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    """Greedy at temperature 0; otherwise temperature-scaled nucleus (top-p) sampling."""
    import torch

    if temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cut = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p  # keep the smallest set reaching top_p
        sorted_p[cut] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator).item())


class LanguageModel:
    def __init__(self, model: Any, tokenizer: Any, device: Any, max_context: int) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_context = max_context
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = eos_ids

    @classmethod
    def load(cls, model_dir: Path, device: Any, max_context: int | None = None, trust_remote_code: bool = False) -> LanguageModel:
        """The model's own context length (max_position_embeddings) unless `max_context` is smaller."""
        from graft.jobs.tasks.lm_loading import load_model, load_tokenizer

        tokenizer = load_tokenizer(model_dir, trust_remote_code)
        model = load_model(model_dir, trust_remote_code=trust_remote_code).to(device).eval()
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        return cls(model, tokenizer, device, min(max_context, limit) if max_context else limit)

    def prompt_ids(self, req: GenerationRequest) -> list[int]:
        if req.kind == "chat":
            assert req.messages is not None
            text = self.tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids = list(self.tokenizer(req.prompt or "")["input_ids"])
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization", param="prompt")
        if not req.max_tokens_given and len(ids) < self.max_context:
            req.max_tokens = min(req.max_tokens, self.max_context - len(ids))  # the default shrinks to fit
        if len(ids) + req.max_tokens > self.max_context:
            raise ApiError(
                400,
                f"the prompt has {len(ids)} tokens and max_tokens is {req.max_tokens}: more than this model's context of {self.max_context} tokens; "
                "shorten the prompt or lower max_tokens",
                param="messages" if req.kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        return ids

    def generate(self, req: GenerationRequest, ids: list[int]) -> Iterator[Step]:
        """Deltas of generated text, then one final Step with the finish reason and token counts."""
        import torch

        generator = torch.Generator(device="cpu")
        generator.manual_seed(req.seed if req.seed is not None else int(torch.seed() % (2**63)))
        out: list[int] = []
        sent = 0  # characters already sent
        finish = "length"
        past = None
        inputs = torch.tensor([ids], device=self.device)
        while len(out) < req.max_tokens:
            # Per call, not around the loop: the caller may resume this generator on another thread,
            # and inference mode is a per-thread setting.
            with torch.inference_mode():
                result = self.model(input_ids=inputs, past_key_values=past, use_cache=True)
                logits = result.logits[0, -1].float().cpu()
            past = result.past_key_values
            token = sample(logits, req.temperature, req.top_p, generator)
            if token in self.eos_ids:
                finish = "stop"
                break
            out.append(token)
            inputs = torch.tensor([[token]], device=self.device)
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            cut = find_stop(text, req.stop) if req.stop else None
            if cut is not None:
                if cut > sent:
                    yield Step(text=text[sent:cut])
                sent = cut
                finish = "stop"
                break
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 character: wait for the next token
            ready = len(text) - held_back(text, req.stop)
            if ready > sent:
                yield Step(text=text[sent:ready])
                sent = ready
        if finish == "length":
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            if len(text) > sent:
                yield Step(text=text[sent:])
        yield Step(finish=finish, prompt_tokens=len(ids), completion_tokens=len(out))
