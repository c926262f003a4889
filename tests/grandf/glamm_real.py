"""Run the annotation parsing of a local copy of GLaMM's ``GranDf_gcg_ds.py`` (never part of this repository).

Set ``GLAMM_REPO`` to a GLaMM checkout (or to any folder holding ``dataset/gcg_datasets/GranDf_gcg_ds.py``) and the
export tests parse every exported file with GLaMM's own ``_parse_annotations`` / ``_load_annotations`` /
``create_conversations`` as well as with the statement in :mod:`tests.grandf.glamm_loaders`. The module's model-side
imports (the LLaVA conversation template, SAM's resize transform, ``cv2``, the question list) are replaced by small
stand-ins while it is imported; ``__init__`` (which loads a CLIP processor) is bypassed — the parsing methods only
need ``image_folder`` (and, for the conversation, the question templates).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.grandf.glamm_loaders import Parsed

LOADER = Path("dataset/gcg_datasets/GranDf_gcg_ds.py")
ENV = "GLAMM_REPO"


def glamm_repo() -> Path | None:
    """The folder ``GLAMM_REPO`` names, when it holds the loader file."""
    value = os.environ.get(ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not (path / LOADER).is_file():
        raise FileNotFoundError(f"{ENV}={value} does not hold {LOADER}")
    return path


class _Conversation:
    """The conversation template's interface as ``create_conversations`` uses it; the prompt is the last message."""

    roles = ("USER", "ASSISTANT")

    def __init__(self) -> None:
        self.messages: list[list[str]] = []

    def copy(self) -> _Conversation:
        return _Conversation()

    def append_message(self, role: str, message: str) -> None:
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        return self.messages[-1][1]


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@contextmanager
def _stand_ins():
    conversation = _stub("model.llava.conversation", default_conversation=_Conversation())
    stubs = {
        "cv2": _stub("cv2"),
        "model": _stub("model"),
        "model.llava": _stub("model.llava", conversation=conversation),
        "model.llava.conversation": conversation,
        "model.SAM": _stub("model.SAM"),
        "model.SAM.utils": _stub("model.SAM.utils"),
        "model.SAM.utils.transforms": _stub("model.SAM.utils.transforms", ResizeLongestSide=object),
        "utils": _stub("utils"),
        "utils.utils": _stub("utils.utils", DEFAULT_IMAGE_TOKEN="<image>"),
        "dataset": _stub("dataset"),
        "dataset.utils": _stub("dataset.utils"),
        "dataset.utils.utils": _stub("dataset.utils.utils", GCG_QUESTIONS=["Describe the image in detail."]),
    }
    added = [name for name in stubs if name not in sys.modules]
    sys.modules.update({name: stubs[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def load_module(repo: Path) -> types.ModuleType:
    """GLaMM's loader module, imported from ``repo`` with the stand-ins."""
    with _stand_ins():
        spec = importlib.util.spec_from_file_location("glamm_gcg_datasets", repo / LOADER)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _dataset(module: types.ModuleType, cls_name: str, image_dir: Path) -> Any:
    ds = object.__new__(getattr(module, cls_name))
    ds.image_folder = str(image_dir)
    ds.question_templates = ["Describe the image in detail."]
    ds.begin_str = "The <image> provides an overview of the picture.\n"
    ds.validation = False
    return ds


def _parsed(file_name: str, ann: dict[str, Any]) -> Parsed:
    return Parsed(
        file_name, ann["caption"], list(ann["labels"]), [list(t) for t in ann["tokens_positive"]], list(ann["masks"])
    ).by_start()


def parse_gcg_base(module: types.ModuleType, element: dict[str, Any], image_dir: Path) -> tuple[Parsed, str]:
    """GLaMM's base parsing of one GranDf_HA / OpenPSG element, and its tagged answer."""
    ds = _dataset(module, "OpenPsgGCGDataset", image_dir)
    ann = ds._parse_annotations(element)
    parsed = _parsed(ann["file_name"], ann)
    _, conversations = ds.create_conversations(parsed.caption, parsed.tokens_positive)
    return parsed, conversations[0]


def parse_refcocog(module: types.ModuleType, element: dict[str, Any], image_dir: Path) -> Parsed:
    """GLaMM's RefCOCOg parsing of one element (a one-key dict)."""
    ds = _dataset(module, "RefCOCOgGCGDataset", image_dir)
    ann = ds._parse_annotations(next(iter(element.values())))
    return Parsed(
        ann["file_name"],
        ann["caption"],
        list(ann["labels"]),
        [list(t) for t in ann["tokens_positive"]],
        list(ann["masks"]),
    )


def parse_flickr(module: types.ModuleType, path: Path, image_dir: Path) -> list[Parsed]:
    """GLaMM's Flickr30K loading, filtering and parsing of a whole file."""
    import contextlib
    import io

    ds = _dataset(module, "Flickr30kGCGDataset", image_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        ds.data_infos = ds._load_annotations(str(path))
    ds.data_infos = [ds.data_infos[i] for i in ds._filter_images(min_size=32)]
    out = []
    for info in ds.data_infos:
        ann = ds._parse_annotations(info, ds.coco.loadAnns(ds.coco.getAnnIds(imgIds=info["id"])))
        out.append(_parsed(info["file_name"], ann))
    return out
