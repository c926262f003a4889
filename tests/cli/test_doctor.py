"""``grand-engine doctor``: each check with its inputs given, and the command on a tiny manifest without checkpoints."""

from __future__ import annotations

import socket
from importlib import metadata
from types import SimpleNamespace

import pytest

from grand_engine.cli import main
from grand_engine.cli.doctor import (
    FAIL,
    GIB,
    INFO,
    OK,
    WARN,
    Check,
    check_disk,
    check_java,
    check_python,
    check_ray,
    check_vllm,
    gpu_check,
    probe_ray,
    vllm_slots,
)
from grand_engine.config import load_manifest


def test_python_version():
    assert check_python((3, 11, 7), "/v/bin/python") == Check(OK, "python", "3.11.7 (/v/bin/python)")
    old = check_python((3, 9, 18), "/usr/bin/python3")
    assert old.status == FAIL and "Python 3.10 or newer" in old.fix


def test_gpus_are_required_only_when_stages_ask_for_them_here():
    assert gpu_check(["NVIDIA H100 80GB HBM3 80 GiB"], ["depth"], cluster=False).status == OK
    assert gpu_check([], [], cluster=False).status == INFO
    assert gpu_check([], ["depth", "sam_masks"], cluster=True).status == INFO  # the cluster's GPUs run them
    missing = gpu_check([], ["depth", "sam_masks"], cluster=False)
    assert missing.status == FAIL and missing.detail == "no CUDA GPU here, and stages depth, sam_masks ask for GPUs"
    assert "--manifest tiny" in missing.fix


def test_vllm_is_required_by_the_grand_manifests_llm_slots():
    slots = vllm_slots(load_manifest("grand"))
    assert slots == ["dense_caption.llm", "verify.llm", "extra_context.llm"]
    assert check_vllm(slots, installed=False).status == FAIL
    assert check_vllm([], installed=False).status == INFO


def test_java_found_or_missing(tmp_path):
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"17.0.2\" 2022-01-18' >&2\n")
    java.chmod(0o755)
    assert check_java(lambda name: str(java)) == Check(OK, "java", f'openjdk version "17.0.2" 2022-01-18 ({java})')
    missing = check_java(lambda name: None)
    assert missing.status == WARN and "METEOR" in missing.detail


@pytest.mark.parametrize(("free_gib", "status"), [(0.5, FAIL), (5.0, WARN), (100.0, OK)])
def test_free_disk_at_the_nearest_existing_folder(tmp_path, free_gib, status):
    asked = []

    def usage(path):
        asked.append(path)
        return SimpleNamespace(free=free_gib * GIB)

    check = check_disk(str(tmp_path / "not" / "yet"), usage=usage)
    assert asked == [str(tmp_path)] and check.status == status
    assert check.detail.startswith(f"{free_gib:.1f} GiB free at {tmp_path}")
    assert check_disk("s3://bucket/run").status == INFO


def test_ray_without_address_with_a_live_cluster_and_with_a_dead_one():
    version = metadata.version("ray")
    assert check_ray(None).status == INFO and "starts a local Ray" in check_ray(None).detail
    live = check_ray("head:6379", probe=lambda a: {"CPU": 64.0, "GPU": 8.0, "__nodes__": 2})
    assert live == Check(OK, "ray", f"{version}; cluster at head:6379: 2 node(s), 64 CPUs, 8 GPUs")

    def dead(address):
        raise RuntimeError("no answer within 60 s")

    failed = check_ray("head:6379", probe=dead)
    assert failed.status == FAIL and failed.detail.endswith("does not answer: no answer within 60 s")


def test_a_closed_port_fails_at_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"cannot connect to 127.0.0.1:{port}"):
        probe_ray(f"127.0.0.1:{port}")


def test_doctor_lists_every_missing_tiny_checkpoint_with_its_fix(tmp_path, capsys):
    empty = tmp_path / "no-checkpoints"
    code = main(["doctor", "--var", f"tiny_dir={empty}", "--var", f"llm_dir={empty}/llama", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line.split()[1] for line in lines[:7]] == ["python", "torch", "gpus", "ray", "vllm", "java", "disk"]
    sam = f"FAIL  checkpoint  local checkpoint {empty}/sam-vit-tiny does not exist (for sam_masks.sam, masks.sam)"
    assert f"{sam} — fix: build the tiny checkpoints with `grand-engine models tiny` (or set GRAND_TINY_DIR)" in lines
    checkpoints = [line for line in lines if line.split()[1] == "checkpoint"]
    for line in checkpoints:  # everything under the empty folder is missing; installed packages (spaCy) are found
        assert line.startswith("FAIL") == (str(empty) in line), line
    fails = [line for line in lines if line.startswith("FAIL")]
    assert lines[-1] == f"{len(fails)} required check(s) failed"
