"""Records that say what they promise: compaction, lost or changed outputs noticed at planning, and ``verify``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grand_engine.cli import main
from grand_engine.config import load_manifest
from grand_engine.io.store import OutputStore
from grand_engine.runtime.manifests import MANIFESTS, StageRecord, commit_record, data_path, errors_path
from grand_engine.runtime.plan import make_plan
from grand_engine.runtime.records import COMPACT, RecordBook, compact_path, invalidate, read_record
from grand_engine.runtime.run import run
from grand_engine.runtime.verify import verify
from tests.io.shards import image_bytes, sa1b_json, write_tar
from tests.runtime.stages_for_tests import executions


def _run(manifest: Path, shards: Path, out: Path):
    return run(load_manifest(manifest), [str(shards)], str(out), backend="inline", progress=False)


@pytest.fixture
def finished(shards, test_manifest, tmp_path):
    """A finished run: 2 shards × 2 units × 4 stages, ``sa_2`` refused by t_area (an error row)."""
    manifest, log = test_manifest(t_area={"fail_image": "sa_2"})
    out = tmp_path / "out"
    plan, summary = _run(manifest, shards, out)
    assert summary.ok
    log.unlink()
    return manifest, log, out, plan


def test_a_finished_shard_is_compacted_into_one_file(finished):
    _, _, out, plan = finished
    files = sorted(p.relative_to(out).as_posix() for p in (out / MANIFESTS).rglob("*") if p.is_file())
    assert files == [f"{COMPACT}/sa_000000.arrow", f"{COMPACT}/sa_000001.arrow"]
    book = RecordBook.load(OutputStore(out))
    assert len(book) == 16
    rec = book.get("t_area", plan.units[1].unit_id)  # sa_2 is in the second unit of the first shard
    assert rec.errors == 1 and rec.errors_output == errors_path("t_area", plan.units[1].unit_id)
    assert rec.errors_bytes == (out / rec.errors_output).stat().st_size
    assert rec.bytes == (out / rec.output).stat().st_size and rec.schema_version == "1"


def test_a_per_pair_record_newer_than_the_compacted_file_wins(finished):
    _, _, out, plan = finished
    store = OutputStore(out)
    unit_id = plan.units[0].unit_id
    newer = StageRecord(**{**vars(read_record(store, "t_double", unit_id)), "seconds": 99.0})
    commit_record(store, newer)  # as a crash after a commit and before the shard's next compaction leaves it
    assert read_record(store, "t_double", unit_id).seconds == 99.0
    assert len(RecordBook.load(store)) == 16


def test_a_deleted_table_is_noticed_and_only_that_pair_reruns(finished):
    """Before: the planner trusted the record, printed nothing to do, and status said complete."""
    manifest, log, out, plan = finished
    unit_id = plan.units[2].unit_id
    (out / data_path("t_double", unit_id)).unlink()
    plan2, summary = _run(manifest, Path(plan.shards[0]).parent, out)
    assert plan2.pairs_todo() == 1
    assert executions(log) == [("t_double", unit_id)] and summary.executed == [("t_double", unit_id)]


def test_a_table_of_another_size_or_lost_error_rows_rerun_that_pair(finished):
    manifest, log, out, plan = finished
    changed, refused = plan.units[0].unit_id, plan.units[1].unit_id
    table = pq.read_table(out / data_path("t_pixels", changed))
    replacement = out / "replacement.parquet"
    pq.write_table(table.slice(0, 1), replacement)
    replacement.replace(out / data_path("t_pixels", changed))  # another size, moved into place
    (out / errors_path("t_area", refused)).unlink()  # the error rows of sa_2 are gone
    _run(manifest, Path(plan.shards[0]).parent, out)
    assert sorted(executions(log)) == sorted([("t_pixels", changed), ("t_area", refused)])


def test_verify_passes_a_finished_run(finished):
    _, _, out, _ = finished
    report = verify(str(out))
    assert report.ok and report.records == 16 and report.tables == 16
    # per unit: t_area is given 2 images, t_double and t_pixels what t_area kept (1 in the unit of sa_2, else 2)
    assert report.images_checked == 4 * 2 + 2 * (3 * 2 + 1)


def test_verify_reports_each_discrepancy_and_repair_drops_exactly_those_records(finished):
    manifest, log, out, plan = finished
    store = OutputStore(out)
    gone, short, lost_image = plan.units[0].unit_id, plan.units[2].unit_id, plan.units[3].unit_id
    (out / data_path("t_double", gone)).unlink()
    # a table whose record agrees with it (size and rows) but which lost an image: only accounting can tell
    rec = read_record(store, "t_pixels", lost_image)
    kept = pq.read_table(out / data_path("t_pixels", lost_image)).slice(0, 1)
    size = store.write_table(data_path("t_pixels", lost_image), kept)
    commit_record(store, StageRecord(**{**vars(rec), "rows": 1, "bytes": size}))
    # a record that promises more rows than its table holds
    rec = read_record(store, "t_area", short)
    commit_record(store, StageRecord(**{**vars(rec), "rows": 5}))

    report = verify(str(out))
    found = {(f.stage, f.unit_id, f.kind) for f in report.findings}
    dropped_id = pq.read_table(out / data_path("t_double", lost_image)).column("image_id").to_pylist()[1]
    assert found == {
        ("t_double", gone, "MissingTable"),
        ("t_area", short, "TableRowCountDiffers"),
        ("t_pixels", lost_image, "ImageMissing"),
    }
    assert dropped_id in next(f.detail for f in report.findings if f.kind == "ImageMissing")

    repaired = verify(str(out), repair=True)
    assert repaired.repaired == 3
    _run(manifest, Path(plan.shards[0]).parent, out)
    assert sorted(executions(log)) == sorted([("t_double", gone), ("t_area", short), ("t_pixels", lost_image)])
    assert verify(str(out)).ok


def test_an_image_with_both_a_row_and_an_error_row_is_reported(finished):
    _, _, out, plan = finished
    store = OutputStore(out)
    unit_id = plan.units[0].unit_id
    errors = pq.read_table(out / errors_path("t_area", plan.units[1].unit_id))
    image = pq.read_table(out / data_path("t_area", unit_id)).column("image_id")[0].as_py()
    row = {**errors.to_pylist()[0], "image_id": image, "unit_id": unit_id}
    size = store.write_table(errors_path("t_area", unit_id), pa.Table.from_pylist([row], schema=errors.schema))
    rec = read_record(store, "t_area", unit_id)
    commit_record(
        store,
        StageRecord(
            **{**vars(rec), "errors": 1, "errors_output": errors_path("t_area", unit_id), "errors_bytes": size}
        ),
    )
    (finding,) = verify(str(out)).findings
    assert (finding.stage, finding.unit_id, finding.kind) == ("t_area", unit_id, "ImageTwice")
    assert image in finding.detail


def test_verify_command_exit_codes(finished, capsys):
    _, _, out, plan = finished
    assert main(["verify", str(out), "--no-progress"]) == 0
    assert "0 discrepancies" in capsys.readouterr().out
    (out / data_path("t_area", plan.units[0].unit_id)).unlink()
    assert main(["verify", str(out), "--no-progress", "--repair"]) == 1
    text = capsys.readouterr().out
    assert "MissingTable" in text and "removed 1 records" in text
    assert read_record(OutputStore(out), "t_area", plan.units[0].unit_id) is None


def test_invalidate_rewrites_the_compacted_file(finished):
    _, _, out, plan = finished
    store = OutputStore(out)
    unit_id = plan.units[0].unit_id
    assert invalidate(store, "t_pixels", unit_id)
    assert not invalidate(store, "t_pixels", unit_id)
    with pa.ipc.open_file(out / compact_path("sa_000000")) as reader:
        shard_records = reader.read_all()
    pairs = set(zip(shard_records["stage"].to_pylist(), shard_records["unit_id"].to_pylist(), strict=True))
    assert ("t_pixels", unit_id) not in pairs and len(pairs) == 7


def test_duplicate_members_are_warnings_and_stay_in_the_images_table(tmp_path, test_manifest):
    """A repeated id: the first copy is used (a row) and the repeat is a warning row, not an exclusion."""
    folder = tmp_path / "shards"
    folder.mkdir()
    first, second = image_bytes(20, 10, (10, 20, 30)), image_bytes(30, 10, (40, 50, 60))
    annotation = json.dumps(sa1b_json(1, 20, 10)).encode()
    write_tar(folder / "sa_000000.tar", [("sa_1.jpg", first), ("sa_1.json", annotation), ("sa_1.jpg", second)])
    manifest, _ = test_manifest()
    out = tmp_path / "out"
    _, summary = _run(manifest, folder, out)
    assert summary.ok
    errors = pq.read_table(out / errors_path("images", "sa_000000/00000")).to_pylist()
    assert [(e["image_id"], e["error_type"], e["severity"]) for e in errors] == [
        ("sa_1", "DuplicateMember", "warning")
    ]
    assert pq.read_table(out / data_path("t_area", "sa_000000/00000")).column("image_id").to_pylist() == ["sa_1"]
    record = read_record(OutputStore(out), "images", "sa_000000/00000")
    assert (record.errors, record.warnings) == (0, 1)
    assert json.loads(json.dumps(record.error_types)) == {"DuplicateMember": 1}
    assert verify(str(out)).ok


def test_a_table_lost_before_a_rerun_of_another_stage_is_still_noticed(finished):
    """Local disks: only folders changed since their shard's records were compacted are listed. Invalidating other
    records of the shard rewrites its compacted file, which must not hide a deletion that came before."""
    manifest, log, out, plan = finished
    store = OutputStore(out)
    lost, other = plan.units[0].unit_id, plan.units[1].unit_id
    (out / data_path("t_double", lost)).unlink()
    assert invalidate(store, "t_pixels", other)  # same shard: its compacted records are rewritten
    _run(manifest, Path(plan.shards[0]).parent, out)
    assert sorted(executions(log)) == sorted([("t_double", lost), ("t_pixels", other)])


def test_unchanged_shard_folders_are_not_listed_file_by_file(finished, monkeypatch):
    _, _, out, plan = finished
    store = OutputStore(out)
    listed: list[str] = []
    original = OutputStore.listing

    def spy(self, rel_dir, read_size=None):
        listed.append(rel_dir)
        return original(self, rel_dir, read_size)

    monkeypatch.setattr(OutputStore, "listing", spy)
    plan2 = make_plan(plan.pipeline, [str(Path(plan.shards[0]).parent)], store, unit_size=2)
    assert plan2.pairs_todo() == 0
    assert [
        d for d in listed if not d.startswith("_manifests")
    ] == []  # every output folder is older than its compaction
    os.utime(out / "t_area" / "sa_000001", None)  # a change in one folder (as a deletion would make)
    listed.clear()
    make_plan(plan.pipeline, [str(Path(plan.shards[0]).parent)], store, unit_size=2)
    assert [d for d in listed if not d.startswith("_manifests")] == ["t_area/sa_000001"]
