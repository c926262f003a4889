"""``grand-engine sources prepare``: each dataset's files to record shards, with the summary of what was left out."""

from __future__ import annotations

import json

from grand_engine.cli import main
from tests.sources.fixtures import write_flickr30k, write_openpsg, write_refcocog


def test_prepare_refcocog_from_the_pickle(tmp_path, capsys):
    paths = write_refcocog(tmp_path / "ref")
    code = main(
        [
            "sources",
            "prepare",
            "refcocog",
            "--instances",
            str(paths["instances_json"]),
            "--refs",
            str(paths["refs_path"]),
            "--images",
            str(paths["images_dir"]),
            str(tmp_path / "shards"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "refcocog: 2 records (2 usable) in 1 shard(s)" in out
    assert "usable by split: train 1, val 1" in out and "dropped: empty_phrase 1, unknown_annotation 1" in out
    assert "--input refcocog" in out
    lines = (tmp_path / "shards" / "refcocog-00000.jsonl").read_text().splitlines()
    assert [json.loads(x)["record_id"] for x in lines] == ["refcocog_11_train", "refcocog_12_val"]


def test_prepare_openpsg_and_flickr_count_error_records(tmp_path, capsys):
    paths = write_openpsg(tmp_path / "psg")
    assert (
        main(
            [
                "sources",
                "prepare",
                "openpsg",
                "--psg",
                str(paths["psg_json"]),
                "--coco-root",
                str(paths["coco_root"]),
                "--captions",
                str(paths["captions"][0]),
                "--records-per-shard",
                "2",
                str(tmp_path / "psg_shards"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "openpsg: 3 records (2 usable) in 2 shard(s)" in out and "error records: NoRelation 1" in out
    flickr = write_flickr30k(tmp_path / "f")
    assert (
        main(
            [
                "sources",
                "prepare",
                "flickr30k",
                "--entities",
                str(flickr["entities_dir"]),
                "--images",
                str(flickr["images_dir"]),
                "--splits",
                "train,val",
                str(tmp_path / "f_shards"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "flickr30k: 4 records (2 usable)" in out
    assert "error records: MalformedSentence 1, MissingAnnotation 1" in out


def test_prepare_names_a_bad_input(tmp_path, capsys):
    bad = tmp_path / "psg.json"
    bad.write_text("{}")
    assert main(["sources", "prepare", "openpsg", "--psg", str(bad), "--coco-root", str(tmp_path), str(tmp_path)]) == 2
    assert "not an OpenPSG file" in capsys.readouterr().err
