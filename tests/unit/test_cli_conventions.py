"""CLI conventions: --version, one exit-code scheme, -o json|yaml, crd to stdout, completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import graft
from graft.cli.main import EXIT_BAD_INPUT, EXIT_OK, main

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune.yaml"


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: graft.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x}\n"
                    "spec: {model: {source: m}, dataset: {source: d}, training: {epochs: 0}}\n")
    return path


def test_version_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"graft {graft.__version__}\n"


def test_validate_exits_2_on_a_bad_spec_like_every_command(bad_spec: Path) -> None:
    assert main(["validate", str(bad_spec)]) == EXIT_BAD_INPUT


def test_run_exits_2_on_the_same_bad_spec(bad_spec: Path) -> None:
    assert main(["run", str(bad_spec), "--no-serve"]) == EXIT_BAD_INPUT


def test_a_wrong_flag_exits_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["validate", "--no-such-flag", str(EXAMPLE)])
    assert exit_info.value.code == EXIT_BAD_INPUT


def test_validate_json_lists_each_error_with_its_field_path(bad_spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-o", "json", str(EXAMPLE), str(bad_spec)]) == EXIT_BAD_INPUT
    results = json.loads(capsys.readouterr().out)["results"]
    assert results[0] == {"file": str(EXAMPLE), "kind": "FineTuneJob", "name": "movie-sentiment", "valid": True, "errors": []}
    assert results[1]["valid"] is False
    assert [e["path"] for e in results[1]["errors"]] == ["spec.training.epochs"]


def test_validate_yaml_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-o", "yaml", str(EXAMPLE)]) == EXIT_OK
    assert yaml.safe_load(capsys.readouterr().out)["results"][0]["valid"] is True


def test_crd_writes_yaml_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == EXIT_OK
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert "FineTuneJob" in kinds and "ModelEndpoint" in kinds


def test_crd_json_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "-o", "json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "List" and all(i["kind"] == "CustomResourceDefinition" for i in doc["items"])


def test_crd_output_file_matches_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "crds.yaml"
    assert main(["crd", "--output-file", str(out)]) == EXIT_OK
    assert capsys.readouterr().out == ""
    main(["crd"])
    assert out.read_text() == capsys.readouterr().out


def test_bash_completion_offers_subcommands_and_flag_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == EXIT_OK
    script = capsys.readouterr().out
    assert "complete -o filenames -F _graft graft" in script
    for word in ("validate", "run", "logs", "operator", "crd"):
        assert word in script
    assert '-o) COMPREPLY=($(compgen -W "text json yaml"' in script


def _complete(script: str, *words: str) -> list[str]:
    """What bash completes for `words` (the last one being typed), with the generated script loaded."""
    import shlex
    import subprocess

    line = " ".join(shlex.quote(w) for w in words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _graft; printf "%s\\n" "${{COMPREPLY[@]}}"'
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_bash_completion_completes_in_bash(capsys: pytest.CaptureFixture[str]) -> None:
    main(["completion", "bash"])
    script = capsys.readouterr().out
    assert _complete(script, "graft", "val") == ["validate"]
    assert _complete(script, "graft", "crd", "-o", "j") == ["json"]
    assert "--follow" in _complete(script, "graft", "logs", "--f")
