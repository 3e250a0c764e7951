"""Request shapes other servers' clients speak, mapped onto the same texts and predictions as /predict.

- KServe v1 (`POST /v1/models/{name}:predict`): `{"instances": ["text", ...]}` (or
  `[{"text": "..."}, ...]`) -> `{"predictions": [{"label", "scores"}, ...]}`.
- Open Inference Protocol v2 (`POST /v2/models/{name}/infer`; KServe v2, Triton clients): one BYTES
  input of shape [N] -> outputs `label` (BYTES, [N]) and `scores` (FP32, [N, labels]).
- Text Embeddings Inference (`POST /predict` with `{"inputs": "text" | ["text", ...]}`) -> a list,
  per text, of `{"label", "score"}` sorted by score.

Pure functions over decoded JSON (`protocol.decode_json` decodes every body): parsing raises
`RequestError` (4xx) with a message that says what to send instead.
"""

from __future__ import annotations

from typing import Any

from graft.serving.protocol import Limits, RequestError, check_text, type_name

V1_EXAMPLE = '{"instances": ["great movie", "awful plot"]}'
V2_EXAMPLE = '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great movie"]}]}'
TEI_EXAMPLE = '{"inputs": "great movie"} or {"inputs": ["great movie", "awful plot"]}'


def _texts(items: Any, where: str, limits: Limits, example: str) -> list[str]:
    if not isinstance(items, list) or not items:
        raise RequestError(422, f"{where} must be a non-empty list, got {type_name(items)}; send {example}")
    if len(items) > limits.max_texts_per_request:
        raise RequestError(413, f"{where} has {len(items)} items, more than the limit of {limits.max_texts_per_request}; "
                                "split them over several requests")
    return [check_text(t, f"{where}[{i}]", limits) for i, t in enumerate(items)]


def parse_v1(body: Any, limits: Limits) -> list[str]:
    """The texts of a KServe v1 `instances` request."""
    if not isinstance(body, dict) or "instances" not in body:
        raise RequestError(422, f"a KServe v1 request is an object with an instances list; send {V1_EXAMPLE}")
    instances = body["instances"]
    if isinstance(instances, list):
        instances = [i["text"] if isinstance(i, dict) and set(i) == {"text"} else i for i in instances]
    return _texts(instances, "instances", limits, V1_EXAMPLE)


def parse_v2(body: Any, limits: Limits) -> tuple[list[str], str | None]:
    """The texts (and the request id) of an Open Inference Protocol v2 infer request."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise RequestError(422, f"a v2 infer request has exactly one input tensor; send {V2_EXAMPLE}")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise RequestError(422, f"inputs[0] must be a tensor object; send {V2_EXAMPLE}")
    if tensor.get("datatype") != "BYTES":
        raise RequestError(422, f"inputs[0].datatype must be BYTES (text), got {tensor.get('datatype')!r}")
    data = tensor.get("data")
    shape = tensor.get("shape")
    if isinstance(data, list) and shape != [len(data)]:
        raise RequestError(422, f"inputs[0].shape {shape!r} does not match its {len(data)} data items; use [{len(data)}]")
    request_id = body.get("id")
    return _texts(data, "inputs[0].data", limits, V2_EXAMPLE), str(request_id) if request_id is not None else None


def parse_tei(body: Any, limits: Limits) -> list[str]:
    """The texts of a Text Embeddings Inference `/predict` request (`inputs`: one text or a list)."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if isinstance(inputs, str):
        return [check_text(inputs, "inputs", limits)]
    return _texts(inputs, "inputs", limits, TEI_EXAMPLE)


def v2_response(model_name: str, model_version: Any, request_id: str | None,
                scores: list[list[float]], label_names: list[str]) -> dict[str, Any]:
    labels = [label_names[max(range(len(s)), key=s.__getitem__)] for s in scores]
    out: dict[str, Any] = {
        "model_name": model_name,
        "outputs": [
            {"name": "label", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
            {"name": "scores", "shape": [len(scores), len(label_names)], "datatype": "FP32",
             "data": [float(p) for s in scores for p in s]},
        ],
    }
    if model_version is not None:
        out["model_version"] = str(model_version)
    if request_id is not None:
        out["id"] = request_id
    return out


def v2_metadata(model_name: str, model_version: Any, label_names: list[str]) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the model's input and output tensors."""
    return {
        "name": model_name,
        "versions": [str(model_version)] if model_version is not None else [],
        "platform": "graft-text-classifier",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, len(label_names)]},
        ],
    }


def tei_response(scores: list[list[float]], label_names: list[str]) -> list[list[dict[str, Any]]]:
    return [sorted(({"label": n, "score": float(p)} for n, p in zip(label_names, s, strict=True)),
                   key=lambda d: -d["score"]) for s in scores]
