"""Field errors raised inside a Ray worker reach the driver whole: they survive pickling."""

from __future__ import annotations

import pickle

import pytest

from graft.jobs.data import DataError
from graft.jobs.sources import SourceError
from graft.jobs.tasks.image_model import ModelSourceError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("cls", [SourceError, DataError, ModelSourceError])
def test_a_field_error_keeps_its_field_and_message_through_pickling(cls: type[SourceError]) -> None:
    error = cls("spec.distillation.teacher", "path 'runs/x/result.json' does not exist")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.field, back.message, str(back)) == (error.field, error.message, str(error))
