"""Training-free open-vocabulary semantic segmentation with CASS, for stuff regions in level 1.

CASS (Kim, Ju, Han, Yang, Hwang: "Distilling Spectral Graph for Object-Context Aware Open-Vocabulary Semantic
Segmentation", CVPR 2025, arXiv 2411.17150) labels every pixel with one class of any list of names, without
training: it distils the spectral graph of a vision foundation model's attention (DINO) into CLIP's last attention
layer, head by head, and adjusts the text embeddings to the objects of the image. GranD's detectors and SAM cover
things; the stuff classes (sky, road, grass, wall, water) are where its level 1 is weakest, and where these regions
are merged in.

Modules (each usable on its own):

* :mod:`~grand_engine.ovss.spectral` — graph steps: eigendecomposition, energy-based low rank, dynamic
  eigenscaling, Wasserstein head matching (Hungarian), distilled attention;
* :mod:`~grand_engine.ovss.context` — object presence prior, class groups, text-embedding adjustment;
* :mod:`~grand_engine.ovss.windows` — sliding windows at the backbones' resolution;
* :mod:`~grand_engine.ovss.backbones` — open_clip ViT with a replaceable last attention, patch-grid resampling
  (DINO's keys come from the ``dino`` model family, :mod:`grand_engine.models.dino`);
* :mod:`~grand_engine.ovss.segmenter` — :class:`CassSegmenter`: image + vocabulary → label map;
* :mod:`~grand_engine.ovss.regions` — label map → RLE regions, the ``ovss`` row, the level-1 stuff merge.

Torch and the backbones are imported only when a segmenter is built, so the pure parts import cheaply.
"""

from grand_engine.ovss.regions import (
    OVSS_SOURCE,
    StuffRegion,
    add_stuff_objects,
    ovss_row,
    regions_from_row,
    regions_from_segmentation,
)
from grand_engine.ovss.segmenter import (
    DEFAULT_STUFF_FILE,
    CassConfig,
    CassSegmenter,
    Segmentation,
    ovss_vocabulary,
    stuff_name,
    stuff_vocabulary,
)

__all__ = [
    "DEFAULT_STUFF_FILE",
    "OVSS_SOURCE",
    "CassConfig",
    "CassSegmenter",
    "Segmentation",
    "StuffRegion",
    "add_stuff_objects",
    "ovss_row",
    "ovss_vocabulary",
    "regions_from_row",
    "regions_from_segmentation",
    "stuff_name",
    "stuff_vocabulary",
]
