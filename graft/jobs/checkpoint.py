"""What a trial checkpoint holds, and how a restarted worker group reads it back.

A checkpoint directory (Ray merges every rank's directory into one):

    graft_checkpoint.json   rank 0: trial, epoch, metrics, progress (epoch, optimizer steps, best
                            score, early-stopping count), backend, whether `hf/` is present
    rng-<rank>.pt           every rank: Python, numpy and torch (CPU and CUDA) RNG states, as tensors
    state.pt                single/ddp, rank 0: trainable weights, optimizer, scheduler (+ scaler)
    deepspeed/state/       DeepSpeed: every rank's shards (`save_checkpoint`)
    hf/                     only when the epoch is the trial's best so far: the exported model
    graft_manifest_r<rank>.json  every rank, written last: the world size and every file the rank
                            wrote with its size and keyed digest, signed with the job's state key
                            (`missing_files` checks a stored checkpoint against it, `verify_checkpoint`
                            that the job wrote it, before anything of it is loaded)

Data order needs no state: every epoch's shuffle is seeded by (seed, epoch). So a worker group
that restarts from the checkpoint of epoch k trains epochs k+1.. exactly as an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

META_FILE = "graft_checkpoint.json"
HF_EXPORT_DIR = "hf"
MANIFEST_PATTERN = re.compile(r"graft_manifest_r(\d+)\.json")


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps done
    best: float | None = None  # best score metric so far
    stale: int = 0  # epochs without improvement (earlyStopping)
    restarts: int = 0  # worker-group restarts this trial has resumed from


def rng_file(rank: int) -> str:
    return f"rng-{rank}.pt"


def save_rng(out: Path, rank: int) -> None:
    """This rank's RNG states as tensors and primitives only, so `load_rng` reads them with
    `weights_only=True` (nothing in a checkpoint is unpickled: tenants can write their storage)."""
    import numpy as np
    import torch

    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, out / rng_file(rank))


def load_rng(src: Path, rank: int) -> bool:
    """Restore this rank's RNG state; False when the checkpoint has none for it (e.g. a changed world size).
    Read with `weights_only=True`: a pickled object planted in place of the file is refused, not run."""
    import numpy as np
    import torch

    path = src / rng_file(rank)
    if not path.is_file():
        return False
    state = torch.load(path, weights_only=True)
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return True


def write_meta(out: Path, meta: dict[str, Any], progress: Progress) -> None:
    (out / META_FILE).write_text(json.dumps({**meta, "progress": asdict(progress)}, indent=2, default=str))


def read_meta(src: Path) -> tuple[dict[str, Any], Progress]:
    meta = json.loads((src / META_FILE).read_text())
    return meta, Progress(**meta.get("progress", {}))


def shard(rows: int, world: int, rank: int, *, seed: int, epoch: int, shuffle: bool) -> tuple[Any, Any]:
    """This rank's row indices and a validity mask (False for padding rows).

    Rows are (optionally) permuted with a generator seeded by (seed, epoch), padded by repeating
    from the start to a multiple of `world`, and dealt round-robin, so every rank gets the same
    count (the same number of batches: collectives line up) and every row is counted once.
    """
    import numpy as np

    order = np.random.default_rng([seed, epoch]).permutation(rows) if shuffle else np.arange(rows)
    per_rank = -(-rows // world) if rows else 0
    total = per_rank * world
    padded = np.resize(order, total) if rows else order
    valid = np.arange(total) < rows
    return padded[rank::world], valid[rank::world]


def manifest_file(rank: int) -> str:
    return f"graft_manifest_r{rank}.json"


def write_manifest(out: Path, rank: int, world: int, key: bytes | None = None) -> None:
    """List every file of this rank's checkpoint directory with its size and keyed digest, signed
    with the job's state key (graft.jobs.signing; default: `state_key()`); call it last."""
    from graft.jobs.signing import digest, sign_doc, state_key

    key = key if key is not None else state_key()
    paths = [p for p in sorted(out.rglob("*")) if p.is_file() and not MANIFEST_PATTERN.fullmatch(p.name)]
    files = {p.relative_to(out).as_posix(): p.stat().st_size for p in paths}
    digests = {p.relative_to(out).as_posix(): digest(key, p.read_bytes()) for p in paths}
    doc = sign_doc(key, {"rank": rank, "world": world, "files": files, "digests": digests})
    (out / manifest_file(rank)).write_text(json.dumps(doc))


def verify_checkpoint(src: Path, key: bytes) -> None:
    """Raise graft.jobs.signing.Unverified unless every rank's manifest in the (merged) checkpoint
    directory `src` is signed with `key` and the files are exactly those they list, unchanged.
    DeepSpeed unpickles its shards: nothing is loaded from a checkpoint that fails this."""
    from graft.jobs.signing import Unverified, digest, verify_doc

    manifests = sorted(p for p in src.iterdir() if MANIFEST_PATTERN.fullmatch(p.name))
    if not manifests:
        raise Unverified(f"checkpoint {src} has no manifest")
    expected: dict[str, str] = {}
    for path in manifests:
        try:
            doc = verify_doc(key, json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise Unverified(f"{path.name} is not JSON") from exc
        digests = doc.get("digests")
        if not isinstance(digests, dict):
            raise Unverified(f"{path.name} lists no digests")
        expected.update({str(k): str(v) for k, v in digests.items()})
    present = {p.relative_to(src).as_posix(): p for p in src.rglob("*") if p.is_file() and not MANIFEST_PATTERN.fullmatch(p.name)}
    for name in sorted(present.keys() | expected.keys()):
        if name not in expected:
            raise Unverified(f"{name} in checkpoint {src} was not written by this job")
        if name not in present:
            raise Unverified(f"{name} is missing from checkpoint {src}")
        if digest(key, present[name].read_bytes()) != expected[name]:
            raise Unverified(f"{name} in checkpoint {src} was changed after this job wrote it")


def missing_files(checkpoint_uri: str) -> list[str]:
    """The files a stored checkpoint should hold by its ranks' manifests but lacks or holds cut short
    ("path (N of M bytes)"), missing manifests included; [] when it is whole.

    Why: when an object store fills up while Ray Train uploads a checkpoint, pyarrow's S3 stream
    reports the failed upload only as "Error ignored when destroying file" and Ray records the
    checkpoint as created; the manifests are what tells a whole checkpoint from a cut one."""
    from graft import storage

    fs, root = storage.fsspec_filesystem(checkpoint_uri)
    root = root.rstrip("/")
    stored = {str(path)[len(root):].lstrip("/"): int(info.get("size") or 0) for path, info in fs.find(root, detail=True).items()}
    ranks = {int(m.group(1)) for name in stored if (m := MANIFEST_PATTERN.fullmatch(name))}
    manifests = [json.loads(fs.cat_file(f"{root}/{manifest_file(r)}")) for r in sorted(ranks)]
    world = max([int(m["world"]) for m in manifests], default=1)
    problems = [manifest_file(r) for r in range(world) if r not in ranks]
    for manifest in manifests:
        for name, size in manifest["files"].items():
            if name not in stored:
                problems.append(name)
            elif stored[name] != size:
                problems.append(f"{name} ({stored[name]} of {size} bytes)")
    return problems
