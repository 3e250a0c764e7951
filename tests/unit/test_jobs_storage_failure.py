"""How graft.jobs tells a storage failure from another one, and which line of it the tenant reads."""

from __future__ import annotations

import errno

import pytest

from graft.jobs.entrypoint import STORAGE_FAILURE, storage_cause, storage_failure
from graft.storage import StorageError

pytestmark = pytest.mark.unit

RAY_TRACEBACK = """Traceback (most recent call last):
  File "ray/air/execution/_internal/event_manager.py", line 110, in resolve_future
    result = ray.get(future)
ray.exceptions.RayTaskError(OSError): ray::_Inner.train() (pid=1, ip=127.0.0.1)
  File "pyarrow/error.pxi", line 92, in pyarrow.lib.check_status
OSError: When getting information for key 'graft/ns/job/ckpt' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to server

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "ray/tune/execution/tune_controller.py", line 1248, in _on_error
"""


def test_a_full_disk_is_a_storage_failure() -> None:
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device")) == STORAGE_FAILURE


def test_an_error_raised_from_a_storage_error_is_a_storage_failure() -> None:
    try:
        try:
            raise StorageError("cannot write s3://b/x")
        except StorageError as inner:
            raise RuntimeError("the trial failed") from inner
    except RuntimeError as outer:
        assert storage_failure(outer) == STORAGE_FAILURE


def test_a_bad_value_is_not_a_storage_failure() -> None:
    assert storage_failure(ValueError("learning rate must be positive")) is None


def test_the_line_naming_the_storage_problem_is_picked_out_of_a_ray_traceback() -> None:
    assert storage_cause(RAY_TRACEBACK).startswith("OSError: When getting information for key 'graft/ns/job/ckpt'")


def test_a_text_naming_no_storage_problem_gives_its_last_line() -> None:
    assert storage_cause("first\nsecond\n") == "second"
