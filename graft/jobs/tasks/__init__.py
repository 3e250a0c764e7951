"""Tasks: one module per `spec.task` value (see `base.py` for the interface and how to add one)."""

from __future__ import annotations

import importlib

from graft.api.spec import FineTuneJobSpec, TrainingSpec
from graft.jobs.tasks.base import Task, TaskData

# spec.task value -> "module:Class", imported only when the task is used.
TASKS: dict[str, str] = {
    "text-classification": "graft.jobs.tasks.text_classification:TextClassification",
}


def task_class(name: str) -> type[Task]:
    target = TASKS.get(name)
    if target is None:
        raise ValueError(f"spec.task: unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module, _, cls = target.partition(":")
    found: type[Task] = getattr(importlib.import_module(module), cls)
    return found


def get_task(spec: FineTuneJobSpec, training: TrainingSpec | None = None) -> Task:
    """The task object for `spec.task` (with a trial's training settings when given)."""
    task = spec.task.value if hasattr(spec.task, "value") else str(spec.task)
    return task_class(task)(spec, training)


__all__ = ["TASKS", "Task", "TaskData", "get_task", "task_class"]
