"""Tiny closed-set detector checkpoints (family ``detector``): D-FINE, RT-DETR and RT-DETRv2 with the COCO-80
label table."""

from __future__ import annotations

from pathlib import Path

from grand_engine.models.imaging import seeded
from grand_engine.resources import data_file


def _coco_labels() -> dict[int, str]:
    names = [n.strip() for n in data_file("coco_categories.txt").read_text().splitlines() if n.strip()]
    return dict(enumerate(names))


def _rtdetr_processor():
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import RTDetrImageProcessor

    # As the published PekingU/rtdetr_* and ustc-community/dfine-* processors: stretched to 640x640 (aspect not
    # kept), bilinear, scaled by 1/255, no mean/std normalisation, no padding.
    return RTDetrImageProcessor(
        size={"height": 640, "width": 640}, resample=2, do_rescale=True, do_normalize=False, do_pad=False
    )


def build_dfine(dest: Path) -> None:
    """D-FINE with a small HGNetV2 backbone and the COCO-80 label table (as ``dfine-*-obj2coco``)."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import DFineConfig, DFineForObjectDetection, HGNetV2Config

    backbone = HGNetV2Config(
        stage_in_channels=[16, 16, 32, 64],
        stage_mid_channels=[8, 16, 32, 64],
        stage_out_channels=[16, 32, 64, 128],
        stage_num_blocks=[1, 1, 1, 1],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        stage_numb_of_layers=[2, 2, 2, 2],
        embedding_size=8,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
        stem_channels=[3, 8, 16],
    )
    labels = _coco_labels()
    config = DFineConfig(
        backbone_config=backbone,
        encoder_hidden_dim=16,
        encoder_in_channels=[32, 64, 128],
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=16,
        num_queries=30,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_n_points=[3, 6, 3],
        decoder_layers=2,
        decoder_attention_heads=2,
        num_denoising=0,
        depth_mult=0.34,
        hidden_expansion=0.5,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    with seeded(0):
        model = DFineForObjectDetection(config).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)


def _rtdetr_config(config_cls):
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import RTDetrResNetConfig

    backbone = RTDetrResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    labels = _coco_labels()
    return config_cls(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        encoder_hidden_dim=16,
        encoder_in_channels=[32, 64, 128],
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        d_model=16,
        num_queries=30,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_layers=2,
        decoder_attention_heads=2,
        num_denoising=0,
        disable_custom_kernels=True,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )


def build_rtdetr(dest: Path) -> None:
    """RT-DETR (ResNet-vd backbone) with the COCO-80 label table."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    with seeded(0):
        model = RTDetrForObjectDetection(_rtdetr_config(RTDetrConfig)).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)


def build_rtdetr_v2(dest: Path) -> None:
    """RT-DETRv2 (ResNet-vd backbone) with the COCO-80 label table."""
    # transformers is heavy: imported only when a checkpoint is built
    from transformers import RTDetrV2Config, RTDetrV2ForObjectDetection

    with seeded(0):
        model = RTDetrV2ForObjectDetection(_rtdetr_config(RTDetrV2Config)).eval()
    model.save_pretrained(dest)
    _rtdetr_processor().save_pretrained(dest)
