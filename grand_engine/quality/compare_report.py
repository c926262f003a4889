"""The console report of ``grand-engine compare`` (:func:`grand_engine.quality.compare.compare_runs`' result)."""

from __future__ import annotations

import json
from typing import Any

from grand_engine.quality.compare import LISTED_IMAGES


def _value(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "…"


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _regions(name: str, s: dict[str, Any]) -> str:
    text = (
        f"{name} {s['a']:,} → {s['b']:,} ({s['matched']:,} matched at IoU ≥ 0.5, {s['removed']:,} removed, "
        f"{s['added']:,} added; matched IoU {_f(s['matched_iou'])}, mIoU {_f(s['miou'])})"
    )
    if s.get("labels_compared"):
        text += f"; labels agree on {s['labels_agree']:,} of {s['labels_compared']:,} matched"
    if s.get("unreadable_images"):
        text += f"; {s['unreadable_images']} images with unreadable masks"
    return text


def _captions(s: dict[str, Any]) -> str:
    text = f"captions {s['identical']:,} of {s['pairs']:,} identical"
    if s["similarity"] is not None and s["identical"] < s["pairs"]:
        text += f", similarity mean {_f(s['similarity'])} (min {_f(s['min_similarity'])})"
    if s["words_a"] is not None and s["words_a"] != s["words_b"]:
        text += f", words {s['words_a']:.1f} → {s['words_b']:.1f}"
    if s["only_a"] or s["only_b"]:
        text += f" ({s['only_a']} only in A, {s['only_b']} only in B)"
    return text


def _phrases(s: dict[str, Any]) -> str:
    return (
        f"phrases {s['a']:,} → {s['b']:,} ({s['common']:,} in both, {s['removed']:,} removed, {s['added']:,} added; "
        f"{s['images_changed']:,} images changed)"
    )


def stage_lines(s: dict[str, Any]) -> list[str]:
    """What changed in one stage, one aspect per line."""
    lines = []
    if s["rows_only_a"] or s["rows_only_b"]:
        lines.append(f"rows: {s['rows_only_a']} images only in A's table, {s['rows_only_b']} only in B's")
    if "boxes" in s:
        lines.append(_regions("boxes", s["boxes"]))
    if "masks" in s:
        lines.append(_regions("masks", s["masks"]))
    if "captions" in s:
        lines.append(_captions(s["captions"]))
    if "phrases" in s:
        lines.append(_phrases(s["phrases"]))
    moved = [v for v in s.get("verification", []) if v["a"] != v["b"]]
    if "verification" in s:
        same = sum(v["images"] for v in s["verification"] if v["a"] == v["b"])
        text = f"verification: {same} unchanged"
        if moved:
            text += "; " + ", ".join(f"{v['a']} → {v['b']} {v['images']}" for v in moved)
        lines.append(text)
    if s.get("columns_not_compared"):
        lines.append(f"columns not compared: {', '.join(s['columns_not_compared'])}")
    return lines


def format_report(result: dict[str, Any]) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    diffs = result["config_differences"]
    if diffs:
        lines.append(f"configuration differences (run.json): {len(diffs)}")
        width = max(len(d["key"]) for d in diffs)
        for d in diffs:
            lines.append(f"  {d['key'].ljust(width)}  {_value(d['a'])} → {_value(d['b'])}")
    else:
        lines.append("configuration differences (run.json): none")
    images = result["images"]
    lines.append(f"images: {images['both']:,} in both; {images['only_a']:,} only in A; {images['only_b']:,} only in B")
    for side in ("a", "b"):
        ids = images[f"only_{side}_ids"]
        if ids:
            more = f" … and {len(ids) - LISTED_IMAGES} more" if len(ids) > LISTED_IMAGES else ""
            lines.append(f"  only in {side.upper()}: {', '.join(ids[:LISTED_IMAGES])}{more}")
    for side in ("a", "b"):
        if result[f"stages_only_{side}"]:
            lines.append(f"stages done only in {side.upper()}: {', '.join(result[f'stages_only_{side}'])}")
    lines.append("")
    stages = result["stages"]
    if stages:
        width = max(len(s["stage"]) for s in stages)
        lines.append(f"{'stage'.ljust(width)}  images  changed")
        for s in stages:
            details = stage_lines(s)
            head = f"{s['stage'].ljust(width)}  {s['images']:>6,}  {s['changed']:>7,}"
            lines.append(f"{head}  {details[0]}" if details else head)
            pad = " " * (len(head) + 2)
            lines += [pad + d for d in details[1:]]
    if result.get("text_model"):
        lines.append(f"caption similarity and GCG recall encoder: {result['text_model']}")
    gcg = result.get("gcg")
    if gcg is not None:
        lines.append("")
        if "skipped" in gcg:
            lines.append(f"GCG of B against A: not computed: {gcg['skipped']}")
        else:
            lines.append(
                f"GCG of B against A (A's grandf records as pseudo ground truth, {gcg['ground_truth_images']} images, "
                f"{gcg['gt_phrases']} phrases; caption tokenizer {gcg['tokenizer']}):"
            )
            for name, value in gcg["figures"].items():
                lines.append(f"  {name:<7} {'n/a' if value is None else f'{value:.3f}'}")
            lines.append(f"  ({gcg['recall_matches']} of {gcg['gt_phrases']} phrases of A recalled by B)")
            for note in gcg["notes"]:
                lines.append(f"note: {note}")
    return "\n".join(lines)
