"""A trial's error as the job's message shows it: Ray's memory-monitor kill becomes one sentence."""

from __future__ import annotations

import pytest

from graft.jobs.tune import explain_error

pytestmark = pytest.mark.unit

RAY_OOM = (
    "ray.exceptions.RayTaskError(OutOfMemoryError): ray::ImplicitFunc.train() (pid=991, ip=10.244.0.4)\n"
    "ray.exceptions.OutOfMemoryError: 1 worker(s) were killed due to the node running low on memory. Memory on the node "
    "(IP: 10.244.0.6, ID: ae3b459e73905e334deb34ec2f9f2f7d701084ead832b1b533a1f717) was 2.43GB used / 2.50GB limit (0.972745)\n"
    "OOM kill reason: Memory usage 2583666688B exceeded threshold\nTop 10 memory users: PID\tMEM(GB)\tCOMMAND\n"
    + "\n".join(f"{pid}\t0.0{pid % 9}\tray::IDLE" for pid in range(700, 720))
    + "\nRefer to the documentation on how to address the out of memory issue: https://docs.ray.io/..."
)


def test_a_ray_memory_monitor_kill_names_the_node_its_limit_and_the_fields_to_change() -> None:
    text = explain_error(RAY_OOM)
    assert text == ("a Train worker ran out of memory: Ray killed it when its node (10.244.0.6) used 2.43GB of its 2.50GB "
                    "limit; raise spec.resources.memoryPerWorker, or lower training.batchSize / training.maxSeqLength")


def test_another_error_keeps_its_last_lines() -> None:
    text = "\n".join(f"frame {i}" for i in range(20)) + "\nValueError: dataset.source: /data/x.csv does not exist"
    assert explain_error(text).splitlines()[-1] == "ValueError: dataset.source: /data/x.csv does not exist"
    assert len(explain_error(text).splitlines()) == 6
