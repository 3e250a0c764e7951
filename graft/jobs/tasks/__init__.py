"""Tasks: one module per `spec.task` value (see `base.py` for the interface and how to add one)."""

from __future__ import annotations

import importlib

from graft.api.spec import FineTuneJobSpec, TrainingSpec
from graft.jobs.tasks.base import Task, TaskData

# spec.task value -> "module:Class", imported only when the task is used.
TASKS: dict[str, str] = {
    "text-classification": "graft.jobs.tasks.text_classification:TextClassification",
    "causal-lm": "graft.jobs.tasks.causal_lm:CausalLM",
    "image-classification": "graft.jobs.tasks.image_classification:ImageClassification",
}


class UnknownTask(ValueError):
    """`spec.task` names no task module that graft.jobs can train."""


def task_class(name: str) -> type[Task]:
    target = TASKS.get(name)
    if target is None:
        raise UnknownTask(f"no training task {name!r} in graft.jobs; tasks that train: {', '.join(sorted(TASKS))}")
    module, _, cls = target.partition(":")
    found: type[Task] = getattr(importlib.import_module(module), cls)
    return found


def get_task(spec: FineTuneJobSpec, training: TrainingSpec | None = None) -> Task:
    """The task object for `spec.task` (with a trial's training settings when given)."""
    task = spec.task.value if hasattr(spec.task, "value") else str(spec.task)
    return task_class(task)(spec, training)


__all__ = ["TASKS", "Task", "TaskData", "UnknownTask", "get_task", "task_class"]
