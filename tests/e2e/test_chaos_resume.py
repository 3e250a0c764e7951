"""Chaos: a job killed mid-training (a preempted RayJob) resumes on the next attempt.

Real Ray heads (a new one per attempt, as a RayJob retry gets a new RayCluster), the real MiniLM,
durable storage on a real S3 server. The driver is SIGKILLed with its whole process group after
the first trial finished and the second trained at least one epoch; the second attempt runs the
same command, continues the same Tune experiment from the bucket, and records the resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from graft import storage
from graft.api.result import TrainingResult
from graft.jobs.tune import TRIAL_DRIVER_RESOURCE
from testbed.job_driver import JobAttempt, epochs_done, job_document, read_progress, wait_while_running
from testbed.jobdocs import tiny_job
from testbed.ray_head import RayHead

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.slow]

UID = "c4a05000-0000-4000-8000-00000000beef"
# The kill must land while the second trial is between its first and last epoch: 4 epochs of 5
# steps (all 36 training rows at batch 8) leave about 10 s for it; 3 epochs of 2 steps left 6 s,
# which a loaded CI machine missed (the first attempt finished before the kill).
EPOCHS = 4
STEPS = 5


@pytest.fixture
def head_factory() -> Iterator[list[RayHead]]:
    """Start Ray heads on demand; every one of them is stopped at the end."""
    heads: list[RayHead] = []
    yield heads
    for head in heads:
        head.stop()


def _new_head(heads: list[RayHead]) -> RayHead:
    head = RayHead(num_cpus=2, resources={TRIAL_DRIVER_RESOURCE: 1}).start()
    heads.append(head)
    return head


def test_a_killed_job_resumes_on_the_next_attempt_without_rerunning_finished_trials(
    minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path, s3_bucket: str, head_factory: list[RayHead],
) -> None:
    spec = tiny_job(
        minilm_path, sentiment_jsonl, name="chaos",
        training={"epochs": EPOCHS, "maxStepsPerEpoch": STEPS},
        tuning={"numTrials": 2, "maxConcurrentTrials": 1, "scheduler": {"type": "fifo"},
                "searchSpace": {"learningRate": {"type": "choice", "values": [1e-3, 2e-3]}}},
        checkpoints={"storage": f"{s3_bucket}/graft", "numToKeep": 1},
    )["spec"]
    spec_path = tmp_path / "job.yaml"
    spec_path.write_text(yaml.safe_dump(job_document(spec, name="chaos", namespace="team-a", uid=UID)))
    job_dir = storage.job_dir(f"{s3_bucket}/graft", "team-a", "chaos", UID)
    result_uri = f"{job_dir}/result.json"
    progress_uri = f"{job_dir}/runs/chaos-{UID[:8]}/graft_progress.json"

    first = JobAttempt(spec_path, result_uri, _new_head(head_factory), tmp_path / "attempt-1.log").start()

    def one_done_one_started() -> dict[str, list[int]] | None:
        done = epochs_done(read_progress(progress_uri))
        full = [t for t, e in done.items() if len(e) == EPOCHS]
        started = [t for t, e in done.items() if 0 < len(e) < EPOCHS]
        return done if full and started else None

    before = wait_while_running(one_done_one_started, timeout=600, what="trial 1 finished and trial 2 past epoch 1", attempt=first,
                                interval=0.5)
    first.kill()  # preemption: the driver, its Tune loop and (with it) the trials die
    head_factory[0].stop()  # the RayJob retry runs on a new cluster
    finished = next(t for t, e in before.items() if len(e) == EPOCHS)
    interrupted = next(t for t, e in before.items() if len(e) < EPOCHS)
    assert not storage.exists(result_uri)

    second = JobAttempt(spec_path, result_uri, _new_head(head_factory), tmp_path / "attempt-2.log").start()
    assert second.wait(timeout=900) == 0, second.log_tail()

    result = TrainingResult.model_validate_json(storage.read_text(result_uri))
    assert result.status == "succeeded", result.message
    assert result.attempt == 2
    [resume] = [r for r in result.resumes if r.kind == "attempt"]
    assert resume.trials_skipped == [finished]  # not rerun
    assert interrupted in resume.trials_resumed
    assert resume.time_lost_seconds > 0
    assert {t.trial_id: t.epochs_completed for t in result.trials} == {finished: EPOCHS, interrupted: EPOCHS}
    epochs_before_kill = sum(len(e) for e in before.values())
    rerun_from_scratch = epochs_before_kill + 2 * EPOCHS
    assert result.epochs_trained < rerun_from_scratch
    assert result.epochs_trained - epochs_before_kill <= EPOCHS  # attempt 2 trained only the interrupted trial
    assert "resumes the experiment" in second.log_tail(400)

