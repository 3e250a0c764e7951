"""`graft.serving.app:build_app`, called the way Serve calls an app builder from a config's `args`."""

from __future__ import annotations

import pytest
from ray import serve

from graft.api import SpecError
from graft.api.spec import ServingSpec
from graft.serving.app import build_app
from graft.serving.args import ServeArgs, serve_config

pytestmark = pytest.mark.unit


def test_build_app_accepts_the_args_block_of_serve_config() -> None:
    entry = serve_config(ServeArgs(model_uri="/models/m", model_version=2), app_name="a", route_prefix="/", serving=ServingSpec())
    assert isinstance(build_app(entry["args"]), serve.Application)


def test_build_app_names_the_bad_arg_before_anything_is_deployed() -> None:
    with pytest.raises(SpecError, match=r"args\.maxBatchSize: 0 must be >= 1"):
        build_app({"modelUri": "/models/m", "maxBatchSize": 0})
