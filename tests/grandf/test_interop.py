"""The level tables are plain Parquet: pandas, DuckDB, polars and Hugging Face ``datasets`` read them as they are.

Each test runs the query ``docs/exports.md`` shows for that library on a hand-built level-4 output (three images:
two scenes with a dog and a ball each, one empty image) and checks its answer.
"""

from __future__ import annotations

import glob

import pytest

from tests.grandf.level4 import H, W, images_table, level4_row, level4_table, scene_row, write_output


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop") / "out"

    def unit(rows):
        images = images_table([{"image_id": r["image_id"], "width": W, "height": H} for r in rows])
        return {"images": images, "level4": level4_table(rows)}

    write_output(
        root,
        {
            "sa_000000/00000": unit([scene_row("sa_1"), level4_row("sa_2", W, H)]),
            "sa_000000/00001": unit([scene_row("sa_3")]),
        },
    )
    return root


def test_pandas(out):
    pd = pytest.importorskip("pandas")
    (out / "level4" / "sa_000000" / "00001.parquet.tmp-0123").write_bytes(b"half a file")  # a crash leftover
    df = pd.read_parquet(sorted(glob.glob(f"{out}/level4/*/*.parquet")))
    assert sorted(df["image_id"]) == ["sa_1", "sa_2", "sa_3"]
    counts = df.set_index("image_id")["objects"].map(len).to_dict()
    assert counts == {"sa_1": 2, "sa_2": 0, "sa_3": 2}


def test_duckdb_objects_per_label(out):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(
        f"""
        SELECT o.label, count(*) AS n
        FROM (SELECT unnest(objects) AS o FROM read_parquet('{out}/level4/*/*.parquet'))
        GROUP BY o.label ORDER BY n DESC, o.label
        """
    ).fetchall()
    assert rows == [("ball", 2), ("dog", 2)]
    # Masks are plain structs: the RLE of the first object of sa_1.
    ((size,),) = duckdb.sql(
        f"SELECT objects[1].segmentation.size FROM read_parquet('{out}/level4/*/*.parquet') WHERE image_id = 'sa_1'"
    ).fetchall()
    assert list(size) == [H, W]


def test_polars(out):
    pl = pytest.importorskip("polars")
    df = (
        pl.scan_parquet(f"{out}/level4/**/*.parquet")
        .select("image_id", pl.col("objects").list.len().alias("n"))
        .sort("image_id")
        .collect()
    )
    assert df.to_dicts() == [{"image_id": "sa_1", "n": 2}, {"image_id": "sa_2", "n": 0}, {"image_id": "sa_3", "n": 2}]


def test_hf_datasets(out, tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "parquet", data_files=f"{out}/level4/*/*.parquet", split="train", cache_dir=str(tmp_path / "hf")
    )
    assert ds.num_rows == 3
    row = ds.filter(lambda r: r["image_id"] == "sa_1")[0]
    assert row["objects"][0]["label"] == "dog" and row["objects"][0]["bbox"] == [0.0, 0.0, 10.0, 10.0]
    assert row["dense_caption"]["caption"].startswith("A brown dog")


def test_pandas_reads_a_missing_skip_reason_as_a_nullable_string(tmp_path):
    """A usable GCG record has a null skip_reason: pandas shows <NA> in a ``string`` column, pyarrow None."""
    pd = pytest.importorskip("pandas")
    import pyarrow.parquet as pq

    from grand_engine.stages.grandf import GrandF
    from grand_engine.testing import make_unit

    rows = [scene_row("sa_1"), level4_row("sa_2", W, H)]  # verified dense caption; no dense caption at all
    images = images_table([{"image_id": r["image_id"], "width": W, "height": H} for r in rows])
    grandf = GrandF.configure().process(make_unit(images.to_pylist(), inputs={"level4": level4_table(rows)}))
    write_output(tmp_path / "out", {"sa_000000/00000": {"grandf": grandf.table}})
    path = tmp_path / "out" / "grandf" / "sa_000000" / "00000.parquet"

    assert pq.read_table(path).column("skip_reason").to_pylist() == [None, "no_dense_caption"]
    df = pd.read_parquet(path)
    assert df["skip_reason"].dtype == pd.StringDtype() and df["skip_reason"].dtype.na_value is pd.NA
    assert df["skip_reason"].isna().tolist() == [True, False] and df["skip_reason"][0] is pd.NA
    assert df["skip_reason"][1] == "no_dense_caption"
    assert df["caption"].dtype == pd.StringDtype() and df["caption"][1] is pd.NA  # the other string columns too
    assert df.loc[df["skip_reason"].isna(), "image_id"].tolist() == [
        "sa_1"
    ]  # the rows `export --format grandf` writes
