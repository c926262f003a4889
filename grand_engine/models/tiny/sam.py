"""Tiny segment-anything checkpoint (family ``sam``): a state dict plus ``sam_config.json``, built with the
architecture code the SAM adapter loads Meta's ``sam_vit_*.pth`` files into."""

from __future__ import annotations

import json
from pathlib import Path

from grand_engine.models.imaging import seeded
from grand_engine.models.sam_arch import CONFIG_FILE, SAM_VARIANTS, build_sam


def build_sam_vit(dest: Path) -> None:
    """SAM with a 2-block ViT encoder at 256² input: ``sam.pth`` state dict + ``sam_config.json``."""
    # torch is heavy: imported only when a checkpoint is built
    import torch

    with seeded(0):
        model = build_sam(SAM_VARIANTS["tiny"])
    torch.save(model.state_dict(), dest / "sam.pth")
    (dest / CONFIG_FILE).write_text(json.dumps({"model_type": "tiny", "weights": "sam.pth"}, indent=2) + "\n")
