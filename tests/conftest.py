"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.runtime import stages_for_tests  # noqa: F401  (registers the t_* test stages)

# Any accidental Hub access must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered tiny checkpoint (all families), built once per test session into a temp dir."""
    from grand_engine.models.tiny import build_all

    dest = tmp_path_factory.mktemp("tiny")
    build_all(dest)
    return dest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local 2-CPU Ray cluster for the whole test session (start-up costs seconds)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level="ERROR",
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}},
        )
    yield ray
    ray.shutdown()


def write_sa1b_tar(path: Path, images: list[tuple[str, int, int]]) -> Path:
    """A real SA-1B-format tar: one JPEG (flat colour) and one JSON with a single box mask per image."""
    import io
    import json
    import tarfile

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    with tarfile.open(path, "w") as tar:
        for n, (image_id, width, height) in enumerate(images):
            buf = io.BytesIO()
            Image.new("RGB", (width, height), (10 * n, 100, 200)).save(buf, format="JPEG", quality=95)
            mask = np.zeros((height, width), dtype=np.uint8, order="F")
            mask[: height // 2, : width // 2] = 1
            rle = mask_utils.encode(mask)
            ann = {
                "image": {"image_id": n, "width": width, "height": height, "file_name": f"{image_id}.jpg"},
                "annotations": [
                    {
                        "id": n,
                        "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                        "bbox": [0, 0, width // 2, height // 2],
                        "area": int(mask.sum()),
                        "predicted_iou": 0.9,
                        "stability_score": 0.95,
                        "point_coords": [[1.0, 1.0]],
                        "crop_box": [0, 0, width, height],
                    }
                ],
            }
            for name, data in ((f"{image_id}.jpg", buf.getvalue()), (f"{image_id}.json", json.dumps(ann).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Two shards of 4 images each (sizes differ per image) in one folder."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for s in range(2):
        write_sa1b_tar(folder / f"sa_00000{s}.tar", [(f"sa_{s * 10 + i}", 40 + 8 * i, 30 + 4 * i) for i in range(4)])
    return folder


@pytest.fixture
def test_manifest(tmp_path: Path):
    """Write a manifest of images → t_area → t_double → t_pixels with a shared execution log."""

    def make(**params: dict) -> tuple[Path, Path]:
        log = tmp_path / "executions.log"
        area = {"log": str(log), **params.get("t_area", {})}
        double = {"log": str(log), **params.get("t_double", {})}
        pixels = {"log": str(log), **params.get("t_pixels", {})}
        path = tmp_path / "test_manifest.yaml"
        path.write_text(
            textwrap.dedent(
                f"""
                name: test
                unit_size: 2
                stages:
                  images: {{}}
                  t_area: {{params: {area!r}}}
                  t_double: {{params: {double!r}}}
                  t_pixels: {{params: {pixels!r}}}
                """
            )
        )
        return path, log

    return make
