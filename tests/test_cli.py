"""The command line: run, status, rerun, errors, exit codes and messages (inline backend)."""

from __future__ import annotations

import json

import pytest

from grand_engine.cli import main
from tests.runtime.stages_for_tests import executions


def _run(manifest, shards, out, *extra):
    return main(
        [
            "run",
            "--shards",
            str(shards),
            "--out",
            str(out),
            "--manifest",
            str(manifest),
            "--backend",
            "inline",
            "--no-progress",
            *extra,
        ]
    )


def test_run_status_and_noop_second_run(shards, test_manifest, tmp_path, capsys):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    assert _run(manifest, shards, out) == 0
    text = capsys.readouterr().out
    assert "units: 4 total, 4 done, 0 already done, 0 failed" in text
    info = json.loads((out / "run.json").read_text())
    assert (
        info["unit_size"] == 2 and info["seed"] == 0 and "versions" in info and info["stages"]["t_area"]["fingerprint"]
    )

    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "t_area" in status and "4/4" in status
    assert main(["status", str(out), "--json"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    by_stage = {s["stage"]: s for s in parsed["stages"]}
    assert by_stage["images"]["done"] == 4 and by_stage["images"]["rows"] == 8 and by_stage["t_pixels"]["rows"] == 8

    log.unlink()
    assert _run(manifest, shards, out) == 0
    assert "0 (stage, unit) tasks to run" in capsys.readouterr().out
    assert executions(log) == []


def test_a_run_of_some_stages_keeps_the_others_in_run_json(shards, test_manifest, tmp_path, capsys):
    manifest, _ = test_manifest()
    out = tmp_path / "out"
    assert _run(manifest, shards, out) == 0
    full = json.loads((out / "run.json").read_text())["stages"]
    assert _run(manifest, shards, out, "--stages", "images") == 0
    capsys.readouterr()
    after = json.loads((out / "run.json").read_text())["stages"]
    assert len(full) > 1 and after == full  # the other stages' settings are still those their tables were made with


def test_rerun_stage_from_run_json(shards, test_manifest, tmp_path, capsys):
    manifest, log = test_manifest()
    out = tmp_path / "out"
    assert _run(manifest, shards, out) == 0
    log.unlink()
    assert main(["rerun", str(out), "--stage", "t_double", "--backend", "inline", "--no-progress"]) == 0
    assert "invalidated 8 (stage, unit) records" in capsys.readouterr().out
    assert sorted({s for s, _ in executions(log)}) == ["t_double", "t_pixels"]


def test_failed_unit_gives_nonzero_exit_and_errors_command(shards, test_manifest, tmp_path, capsys):
    manifest, _ = test_manifest(t_area={"fail_image": "sa_1"})
    out = tmp_path / "out"
    assert _run(manifest, shards, out, "--set", "t_double.fail_unit=sa_000001/00000") == 1
    text = capsys.readouterr().out
    assert "FAILED t_double sa_000001/00000: RuntimeError: injected failure" in text
    assert main(["errors", str(out), "--stage", "t_area"]) == 0
    listing = capsys.readouterr().out
    assert "1 error rows" in listing and "sa_1" in listing and "refusing sa_1" in listing
    assert main(["status", str(out)]) == 0
    assert "ValueError=1" in capsys.readouterr().out


def test_configuration_errors_exit_2_with_a_message(shards, tmp_path, capsys):
    assert main(["run", "--shards", str(shards), "--out", str(tmp_path / "o"), "--manifest", "no-such"]) == 2
    assert "no pipeline manifest named 'no-such'" in capsys.readouterr().err
    assert main(["run", "--shards", str(tmp_path / "missing.tar"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.tar" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "has no run.json" in capsys.readouterr().err


def test_unit_size_cannot_change_within_one_output(shards, test_manifest, tmp_path, capsys):
    manifest, _ = test_manifest()
    out = tmp_path / "out"
    assert _run(manifest, shards, out) == 0
    assert _run(manifest, shards, out, "--unit-size", "3") == 2
    assert "was written with --unit-size 2" in capsys.readouterr().err


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "grand-engine rerun out/ --stage level1" in capsys.readouterr().out


def test_trust_remote_code_is_announced_loudly(tmp_path, capsys):
    from types import SimpleNamespace

    from grand_engine.cli import configure_logging
    from grand_engine.config import ModelSpec
    from grand_engine.runtime.run import check_models

    pinned = ModelSpec(id=str(tmp_path), family="depth", trust_remote_code=True, revision="abc123")
    unpinned = ModelSpec(id=str(tmp_path), family="depth", trust_remote_code=True)
    safe = ModelSpec(id=str(tmp_path), family="depth")
    pipeline = SimpleNamespace(stages={"depth": SimpleNamespace(models={"a": pinned, "b": unpinned, "c": safe})})
    configure_logging(0)  # the command line's configuration: warnings reach stderr, one line each
    check_models(pipeline)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("WARNING: depth.a") and "no revision pinned" not in err[0]
    assert err[1].startswith("WARNING: depth.b") and "no revision pinned" in err[1]
