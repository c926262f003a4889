"""The refs pickle is read without running code: plain data loads, anything that names a global is refused unrun."""

from __future__ import annotations

import json
import os
import pickle
import pickletools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grand_engine.sources.safe_pickle import UnsafePickleError, load_refs, safe_loads

REFS = [
    {
        "ref_id": 1,
        "ann_id": 101,
        "split": "train",
        "sentences": [{"sent": "a man", "tokens": ["a", "man"]}],
        "score": 0.5,
        "ok": True,
        "none": None,
        "pair": (1, 2),
    }
]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_loads_in_every_protocol(protocol):
    assert safe_loads(pickle.dumps(REFS, protocol=protocol)) == [dict(REFS[0])]


def test_python2_strings_are_read_as_text():
    # protocol 2 as Python 2 writes a byte string: SHORT_BINSTRING 'sent' -> 'a man'
    data = b"\x80\x02]q\x00}q\x01U\x04sentq\x02U\x05a manq\x03sa."
    assert safe_loads(data) == [{"sent": "a man"}]


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_call_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps([{"ref_id": 1}, _Exploit(str(marker))], protocol=2)
    assert any(op.name in ("GLOBAL", "STACK_GLOBAL") for op, _, _ in pickletools.genops(payload))
    with pytest.raises(UnsafePickleError, match="system"):
        safe_loads(payload)
    assert not marker.exists()
    path = tmp_path / "refs(umd).p"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError):
        load_refs(path)
    assert not marker.exists()


@pytest.mark.parametrize("value", [{1, 2}, frozenset([3]), complex(1, 2), bytearray(b"x")])
def test_classes_beyond_plain_containers_are_refused(value):
    with pytest.raises(UnsafePickleError):
        safe_loads(pickle.dumps([value], protocol=2))


def test_shared_and_self_referencing_lists_are_checked_once():
    shared: list = [1]
    for _ in range(60):  # 2**60 paths through the structure if each were walked
        shared = [shared, shared]
    loop: list = []
    loop.append(loop)
    assert safe_loads(pickle.dumps(shared, protocol=2))[0][0] is not None
    assert safe_loads(pickle.dumps(loop, protocol=2))[0][0][0] is not None


def test_json_and_parquet_copies_and_bad_files(tmp_path):
    as_json = tmp_path / "refs.json"
    as_json.write_text(json.dumps([{"ref_id": 1, "sentences": [{"sent": "a man"}]}]))
    assert load_refs(as_json) == [{"ref_id": 1, "sentences": [{"sent": "a man"}]}]
    as_parquet = tmp_path / "refs.parquet"
    pq.write_table(pa.Table.from_pylist([{"ref_id": 1, "split": "val"}]), as_parquet)
    assert load_refs(as_parquet) == [{"ref_id": 1, "split": "val"}]
    not_a_list = tmp_path / "dict.json"
    not_a_list.write_text(json.dumps({"ref_id": 1}))
    with pytest.raises(ValueError, match="list of refs"):
        load_refs(not_a_list)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="neither a pickle"):
        load_refs(garbage)
