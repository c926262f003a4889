"""What each stage asks of its models per image: named assumptions with their sources, and the calls they imply.

A **call** (:class:`Call`) is one kind of model invocation a stage makes, with how many times per image on
average. The counts come from :data:`ASSUMPTIONS` — GranD's published statistics where there are some, the
manifest's own parameters (``top_k``, ``max_regions``…), and stated guesses where nothing is published — and the
prompt and output lengths of the LLM and VLM calls come from the project's prompt files (``prompts/``),
measured in characters and converted with ``chars_per_token``. Every assumption can be changed
(``grand-engine models cost --assume NAME=VALUE``) and the report prints them all with their source.

Stages a program does not know get one pass per image of whatever their model does (and the report says so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Assumption:
    value: float
    source: str


ASSUMPTIONS: dict[str, Assumption] = {
    "image_height": Assumption(1500, "SA-1B images are released with their shorter side at 1,500 px (SA-1B paper)"),
    "image_width": Assumption(2250, "a 2:3 SA-1B image, as the benchmarks' synthetic shards (benchmarks/common.py)"),
    "regions_per_image": Assumption(
        74, "GranD statistics (GLaMM paper, CVPR 2024): 810 M regions over 11 M images, ~74 objects per image"
    ),
    "referring_expressions_per_image": Assumption(7.6, "GranD statistics: 84 M referring expressions / 11 M images"),
    "short_captions_per_image": Assumption(2, "GranD statistics: 2 short captions per image (BLIP-2 and LLaVA)"),
    "sa1b_masks_per_image": Assumption(100, "SA-1B: 1.1 B masks on 11 M images"),
    "sam_classify_fraction": Assumption(
        0.5, "assumed: share of SA-1B masks whose box covers > 1 % of the image (step 9's filter); not measured"
    ),
    "label_assign_fraction": Assumption(
        0.5, "assumed: share of objects with more than one candidate label (step 16 runs CLIP only on those)"
    ),
    "large_objects_per_image": Assumption(
        12,
        "assumed: objects covering >= 2 % of the image (step 15's filter); the projection of docs/performance.md (section 7) assumed ~10",
    ),
    "sam_box_fraction": Assumption(
        0.3, "assumed: share of objects with no SA-1B mask at IoU >= 0.65, segmented by SAM from their box (step 22)"
    ),
    "dense_regions_per_image": Assumption(
        15, "assumed: regions in one Florence-2 <DENSE_REGION_CAPTION> answer (max_regions caps them)"
    ),
    "tokens_per_region": Assumption(9, "a region caption of 3-5 words plus its 4 location tokens"),
    "chars_per_token": Assumption(
        4.0, "~4 characters of English per BPE token (OpenAI tokenizer guidance); used for every prompt file"
    ),
    "landmark_answer_tokens": Assumption(5, "an option name ('Outdoor scene') and the end-of-sequence token"),
    "blip2_caption_tokens": Assumption(12, "BLIP-2 greedy captions run about 10 words (max_new_tokens 20)"),
    "vlm_caption_tokens": Assumption(20, "one short sentence (prompts/caption_vlm.txt)"),
    "region_description_tokens": Assumption(12, "a short phrase (prompts/region_attributes.txt)"),
    "phrases_per_caption": Assumption(3, "noun phrases of a one-sentence caption (step 13)"),
    "regeneration_fraction": Assumption(
        0.5, "assumed: share of dense captions with an unconfirmed item, regenerated once by verify"
    ),
    "unconfirmed_items": Assumption(2, "assumed: checklist items left for the detector in verify"),
    "crop_fraction": Assumption(
        0.1, "assumed: mean area of an object crop shown to a native-resolution VLM, as a share of the image"
    ),
    "vlm_max_visual_tokens": Assumption(
        1280, "visual-token budget of the 2026 candidates' Qwen-VL roles (the Qwen2.5-VL model card's example)"
    ),
}
"""Every named assumption of the per-image workload, with its default and where it comes from."""

LVIS_CATEGORIES = 1203
"""LVIS v1 categories, the vocabulary of ``detect_lvis`` and ``sam_classify`` (step 5, step 9)."""
TAG_VOCABULARY = 1283
"""LVIS (1,203) + COCO (80) names scored by ``tagging`` (text embeddings computed once per worker)."""
FLORENCE_TASK_TOKENS = 12
"""Florence-2 turns a task token into a short instruction ("Locate the objects in the image …")."""


@dataclass(frozen=True)
class Call:
    """One kind of model call a stage makes, ``per_image`` times per image on average.

    ``kind`` is ``image``, ``boxes``, ``text`` or ``generate`` (see :mod:`.archs`); ``image`` is ``full`` (the
    image at the model's input size), ``crop`` (an object crop) or ``none``. ``queries``: text queries scored
    against the image (their embeddings cached per worker); ``text_tokens``: text read in the same pass
    (Grounding DINO) or encoded (``text``); for ``generate``: ``prompt_tokens`` of text besides the image, of
    which ``shared_tokens`` are a prefix common to every image, and ``new_tokens`` generated.

    ``long_side``: the stage resizes the image so that its long side is at most this many pixels before the
    model's processor (``caption_blip2``). ``vision_reused``: the vision tower's output for this image is kept
    from an earlier call on it (the adapter reuses it), so only the language part runs. ``image_prefix_cached``:
    the prompt up to and including the image is a prefix the backend already holds for this image (vLLM's prefix
    and encoder caches), so neither the vision tower nor the prefill of the image tokens runs. A ``pooled`` call is
    one pass over the image whose dense features are pooled over ``boxes`` regions (masks or boxes). ``batched``:
    the stage sends this call for all images of its batch together (a generation decodes them as one batch); when
    false it sends one call at a time.
    """

    kind: str
    per_image: float
    what: str
    image: str = "full"
    queries: int = 0
    text_tokens: int = 0
    prompt_tokens: int = 0
    shared_tokens: int = 0
    new_tokens: int = 0
    boxes: int = 0
    long_side: int = 0
    vision_reused: bool = False
    image_prefix_cached: bool = False
    batched: bool = True


def scene_graph_parts(texts: list[str]) -> dict[str, int]:
    """Characters of rendered scene graphs by section (the layout of :mod:`grand_engine.stages.scene_graph`): the
    depth layers with their object groups, the relationships (and how many lines they have), the short captions and
    the landmark, each with its heading, summed over ``texts``."""
    parts = {"objects": 0, "captions": 0, "relationships": 0, "relationship_lines": 0, "landmarks": 0}
    headings = {"Short Captions:": "captions", "Relationships:": "relationships", "Landmarks:": "landmarks"}
    for text in texts:
        section = "objects"
        for line in text.split("\n"):
            section = headings.get(line.strip(), section)
            parts[section] += len(line) + 1
            if section == "relationships" and "Group Ids:" in line:
                parts["relationship_lines"] += 1
    return parts


class Workload:
    """The assumptions in force (defaults plus overrides) and the prompt lengths derived from the prompt files."""

    def __init__(self, overrides: dict[str, float] | None = None) -> None:
        self.values = {k: a.value for k, a in ASSUMPTIONS.items()}
        for key, value in (overrides or {}).items():
            if key not in self.values:
                raise ValueError(f"unknown workload assumption {key!r}; known: {', '.join(ASSUMPTIONS)}")
            self.values[key] = float(value)
        self.overridden = set(overrides or {})

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def tokens(self, text: str) -> int:
        return max(1, round(len(text) / self.values["chars_per_token"]))

    @cached_property
    def prompts(self) -> dict[str, tuple[int, str]]:
        """Token counts read off the prompt files, each with the files it was measured on."""
        # the stage modules render the prompts exactly as the stages send them
        from grand_engine.models.llm import VICUNA_SYSTEM
        from grand_engine.resources import prompt_file
        from grand_engine.stages.dense_caption import PROMPT, level3_examples
        from grand_engine.stages.extra_context import PROMPT as LEVEL4_PROMPT
        from grand_engine.stages.extra_context import level4_examples, render_level4_objects
        from grand_engine.stages.landmark import LANDMARK_TAXONOMY, render_options
        from grand_engine.stages.llm_common import in_context_examples, render_prompt
        from grand_engine.stages.scene_graph import build_scene_graph

        t = self.tokens
        scenes = in_context_examples()
        system = t(VICUNA_SYSTEM)
        level3_template = render_prompt(PROMPT, examples=level3_examples(), scene_graph="")
        objects = sum(
            len(s["annotation"].get("objects", [])) + len(s["annotation"].get("floating_objects", [])) for s in scenes
        )
        graph = scene_graph_parts([build_scene_graph(s["annotation"])["text"] for s in scenes])
        per_object_graph = graph["objects"] / max(1, objects)
        per_relationship = graph["relationships"] / max(1, graph["relationship_lines"])
        fixed_graph = (graph["captions"] + graph["landmarks"]) / len(scenes)
        n_objects = min(self.values["regions_per_image"], 100)  # scene_graph keeps at most 100 objects (§4.1)
        n_relationships = self.values["referring_expressions_per_image"]
        graph_chars = per_object_graph * n_objects + per_relationship * n_relationships + fixed_graph
        level4_template = render_prompt(LEVEL4_PROMPT, examples=level4_examples(), objects="")
        list_chars = sum(len(render_level4_objects(s["annotation"])) for s in scenes)
        per_object_list = list_chars / max(1, objects)
        caption_chars = sum(len(s["dense_caption"]) for s in scenes) / len(scenes)
        context_chars = sum(len(s["extra_context"]) for s in scenes) / len(scenes)
        import json

        example = json.loads(prompt_file("verify_checklist_example.json").read_text())
        checklist = prompt_file("verify_checklist.txt").read_text()
        coarse = prompt_file("landmark_coarse.txt").read_text()
        fine = prompt_file("landmark_fine.txt").read_text()
        options = render_options(list(LANDMARK_TAXONOMY))
        fine_options = max((render_options(v) for v in LANDMARK_TAXONOMY.values()), key=len)
        return {
            "system_tokens": (system, "the Vicuna v1.1 system prompt (grand_engine/models/llm.py)"),
            "dense_shared_tokens": (
                system + t(level3_template),
                "system prompt + prompts/level3_dense_caption.txt with its two in-context examples",
            ),
            "scene_graph_tokens": (
                t("x" * round(graph_chars)),
                f"the examples' scene graphs: {per_object_graph:.0f} characters per object × {n_objects:g} objects "
                f"(regions_per_image, at most 100) + {per_relationship:.0f} per relationship × "
                f"{n_relationships:g} (referring_expressions_per_image) + {fixed_graph:.0f} of captions and landmark",
            ),
            "dense_caption_tokens": (
                t("x" * round(caption_chars)),
                "mean length of the in-context examples' dense captions (prompts/in_context_examples.json)",
            ),
            "extra_shared_tokens": (
                system + t(level4_template),
                "system prompt + prompts/level4_extra_context.txt with its two in-context examples",
            ),
            "object_list_tokens": (
                t("x" * round(per_object_list * min(self.values["regions_per_image"], 30))),
                f"the examples' object lists ({per_object_list:.0f} characters per object) × at most 30 objects",
            ),
            "extra_context_tokens": (
                t("x" * round(context_chars)),
                "mean length of the in-context examples' extra context (prompts/in_context_examples.json)",
            ),
            "checklist_shared_tokens": (
                system + t(checklist.replace("$caption", example["caption"])) + t(json.dumps(example["answer"])),
                "system prompt + the one-shot checklist turn (prompts/verify_checklist*.{txt,json})",
            ),
            "checklist_request_tokens": (
                t(checklist.replace("$caption", "")),
                "prompts/verify_checklist.txt without the caption",
            ),
            "checklist_answer_tokens": (
                t(json.dumps(example["answer"])),
                "the example answer (prompts/verify_checklist_example.json)",
            ),
            "feedback_tokens": (
                t(prompt_file("verify_feedback.txt").read_text()) + 8,
                "prompts/verify_feedback.txt with two item names",
            ),
            "landmark_prompt_tokens": (
                (t(coarse.replace("$options", options)) + t(fine.replace("$options", fine_options)) + 16) // 2,
                "mean of prompts/landmark_coarse.txt and landmark_fine.txt with their options, + chat template",
            ),
            "caption_prompt_tokens": (
                t(prompt_file("caption_vlm.txt").read_text()) + 8,
                "prompts/caption_vlm.txt + chat template",
            ),
            "crop_prompt_tokens": (
                t(prompt_file("region_attributes.txt").read_text()) + 8,
                "prompts/region_attributes.txt + chat template",
            ),
        }

    def p(self, key: str) -> int:
        return int(self.prompts[key][0])


@dataclass
class Context:
    """What a stage program sees: the configured stage, the slot and the model spec in it, the other stages, the
    workload, the call kinds the model supports."""

    stage: Any
    slot: str
    spec: Any
    stages: dict[str, Any]
    workload: Workload
    kinds: frozenset[str]
    notes: list[str] = field(default_factory=list)

    def param(self, name: str, default: Any = None, stage: str | None = None) -> Any:
        target = self.stages.get(stage) if stage else self.stage
        return getattr(target, name, default) if target is not None else default


def _tags(c: Context) -> int:
    top_k = int(c.param("top_k", 20, stage="tagging") or 20)
    return top_k + 1  # step 6: the tags + "trees"


def _detector(c: Context, queries: int, what: str, per_image: float = 1.0) -> list[Call]:
    """An open-vocabulary detection pass: text queries for OWL / SAM 3, one caption for Grounding DINO."""
    if "generate" in c.kinds:
        c.notes.append("a generative model in a detector slot: not costed as a detector")
        return []
    return [Call("image", per_image, what, queries=queries, text_tokens=queries * 3)]


def prefix_cached(c: Context) -> bool:
    """The role's backend keeps prompt prefixes and image encodings between calls (vLLM: prefix and encoder
    caches), so a second question on the same image prefills only its own text."""
    return getattr(c.spec, "backend", None) == "vllm"


def _landmark(c: Context) -> list[Call]:
    w = c.workload
    if c.slot == "clip":
        return [Call("image", 1, "zero-shot scene category, coarse then fine (same image embedding)")]
    prompt, answer = w.p("landmark_prompt_tokens"), int(w["landmark_answer_tokens"])
    if prefix_cached(c):  # the image comes first in both questions: the fine one finds it in the cache
        return [
            Call("generate", 1, "coarse multiple-choice question", prompt_tokens=prompt, new_tokens=answer),
            Call(
                "generate",
                1,
                "fine multiple-choice question (image prefix cached)",
                prompt_tokens=prompt,
                new_tokens=answer,
                image_prefix_cached=True,
            ),
        ]
    return [Call("generate", 2, "coarse then fine multiple-choice question", prompt_tokens=prompt, new_tokens=answer)]


def _same_image(c: Context, n: float, what: str, reuse: str, **kw: Any) -> list[Call]:
    """``n`` generations on one image: a Florence-2 adapter encodes the image once and reuses the vision features
    for the others (:class:`grand_engine.models.vlm.VLM`); other models encode it every time."""
    if "florence" not in str(c.spec.id).lower() or n <= 1:
        return [Call("generate", n, what, **kw)]
    return [Call("generate", 1, what, **kw), Call("generate", n - 1, f"{what} ({reuse})", vision_reused=True, **kw)]


def _region_captions(c: Context) -> list[Call]:
    w = c.workload
    regions = min(int(c.param("max_regions", 256) or 256), int(w["dense_regions_per_image"]))
    return [
        Call(
            "generate",
            1,
            f"dense region captions (~{regions} regions × {w['tokens_per_region']:g} tokens)",
            prompt_tokens=FLORENCE_TASK_TOKENS,
            new_tokens=int(regions * w["tokens_per_region"]),
        )
    ]


def _ground_phrases(c: Context) -> list[Call]:
    w = c.workload
    caption = (w["blip2_caption_tokens"] + w["vlm_caption_tokens"]) / 2
    n = w["short_captions_per_image"]
    if "generate" in c.kinds:  # Florence-2 style phrase grounding: the caption in, phrases with boxes out
        return _same_image(  # the stage grounds every caption of its batch in one call
            c,
            n,
            "phrase grounding of one caption",
            "the image's vision features reused",
            prompt_tokens=int(caption) + FLORENCE_TASK_TOKENS,
            new_tokens=int(w["phrases_per_caption"] * (4 + 4)),
        )
    return [Call("image", n, "one caption read with the image (whole caption once)", text_tokens=int(caption))]


def _region_attributes(c: Context) -> list[Call]:
    w = c.workload
    florence = "florence" in str(c.spec.id).lower()
    mode = c.param("mode", "auto")
    in_place = mode == "region" or (mode == "auto" and florence)
    n = w["large_objects_per_image"]
    new = int(w["region_description_tokens"])
    if in_place:  # the box as location tokens in the prompt; the image's vision features computed once
        return _same_image(
            c,
            n,
            "one region described in place",
            "the image encoded once for all regions",
            prompt_tokens=FLORENCE_TASK_TOKENS + 4,
            new_tokens=new,
        )
    return [
        Call("generate", n, "one object crop", image="crop", prompt_tokens=w.p("crop_prompt_tokens"), new_tokens=new)
    ]


def _crop_classifier(c: Context, crops: float, what: str) -> list[Call]:
    """CLIP on every region's crop (``mode: crops``, the reference's), or one dense feature map of the whole image
    pooled over the regions (``mode: pooled``)."""
    if c.param("mode", "crops") == "pooled":
        regions = max(1, round(crops))
        return [Call("pooled", 1, f"one image pass pooled over {regions} regions ({what})", boxes=regions)]
    return [Call("image", crops, f"one {what} crop", image="crop")]


def _ovss(c: Context) -> list[Call]:
    """CASS: every window of the image resized to ``short_side`` through CLIP's and the VFM's image towers."""
    # the ovss package loads the manifest schema (pydantic), which a bare GPU machine running a plan file lacks
    from grand_engine.ovss.windows import window_grid

    w = c.workload
    cass = dict(c.param("cass", {}) or {})
    short = int(cass.get("short_side", 448))
    window = int(cass.get("window") or 224)
    stride = int(cass.get("stride") or window // 2)
    h, wd = w["image_height"], w["image_width"]
    scale = short / min(h, wd)
    windows = len(window_grid(max(window, round(h * scale)), max(window, round(wd * scale)), window, stride))
    return [Call("image", windows, f"one {window} px window of the image at short side {short}", image="crop")]


def _dense_caption(c: Context) -> list[Call]:
    w = c.workload
    shared = w.p("dense_shared_tokens")
    return [
        Call(
            "generate",
            1,
            "dense caption from the scene graph",
            image="none",
            prompt_tokens=shared + w.p("scene_graph_tokens"),
            shared_tokens=shared,
            new_tokens=w.p("dense_caption_tokens"),
        )
    ]


def _verify(c: Context) -> list[Call]:
    w = c.workload
    regen = w["regeneration_fraction"]
    if c.slot == "detector":
        return _detector(c, int(w["unconfirmed_items"]), "unconfirmed checklist items on the image", regen)
    if c.slot == "embedder":
        texts = w["regions_per_image"] * 2 + 6
        return [Call("text", texts, "checklist items and scene-graph labels embedded", text_tokens=8)]
    caption = w.p("dense_caption_tokens")
    shared = w.p("checklist_shared_tokens")
    dense_shared = w.p("dense_shared_tokens")
    return [
        Call(
            "generate",
            1 + regen,
            "checklist of the objects a caption names (one-shot)",
            image="none",
            prompt_tokens=shared + w.p("checklist_request_tokens") + caption,
            shared_tokens=shared,
            new_tokens=w.p("checklist_answer_tokens"),
        ),
        Call(
            "generate",
            regen,
            "caption regenerated with feedback",
            image="none",
            prompt_tokens=dense_shared + w.p("scene_graph_tokens") + caption + w.p("feedback_tokens"),
            shared_tokens=dense_shared,
            new_tokens=caption,
        ),
    ]


def _extra_context(c: Context) -> list[Call]:
    w = c.workload
    shared = w.p("extra_shared_tokens")
    return [
        Call(
            "generate",
            1,
            "additional context from the object list",
            image="none",
            prompt_tokens=shared + w.p("object_list_tokens"),
            shared_tokens=shared,
            new_tokens=w.p("extra_context_tokens"),
        )
    ]


def _masks(c: Context) -> list[Call]:
    w = c.workload
    boxes = max(1, round(w["regions_per_image"] * w["sam_box_fraction"]))
    return [
        Call("image", 1, "image embedding (once per image that needs a SAM mask)"),
        Call("boxes", 1, f"{boxes} box prompts decoded against the embedding", boxes=boxes),
    ]


def _sam_masks(c: Context) -> list[Call]:
    c.notes.append("SA-1B images carry their masks: automatic mask generation runs only for other images")
    return []


PROGRAMS: dict[tuple[str, str], Callable[[Context], list[Call]]] = {
    ("landmark", "vlm"): _landmark,
    ("landmark", "clip"): _landmark,
    ("depth", "depth"): lambda c: [Call("image", 1, "relative depth map")],
    ("tagging", "clip"): lambda c: [
        Call("image", 1, f"image embedding scored against {TAG_VOCABULARY} cached names", image="crop")
    ],
    ("detect_closed", "detector"): lambda c: [Call("image", 1, "closed-set detection (COCO-80)")],
    ("detect_lvis", "detector"): lambda c: _detector(c, LVIS_CATEGORIES, f"{LVIS_CATEGORIES} LVIS names as queries"),
    ("detect_ov", "detector"): lambda c: _detector(c, _tags(c), f"{_tags(c)} queries (tags + 'trees')"),
    ("detect_ov2", "detector"): lambda c: _detector(c, _tags(c), f"{_tags(c)} tags as one caption"),
    ("region_captions", "vlm"): _region_captions,
    ("sam_classify", "clip"): lambda c: _crop_classifier(
        c,
        c.workload["sa1b_masks_per_image"] * c.workload["sam_classify_fraction"],
        "SA-1B mask classified over the LVIS names",
    ),
    ("sam_masks", "sam"): _sam_masks,
    ("caption_blip2", "vlm"): lambda c: [
        Call(
            "generate",
            1,
            "short caption",
            prompt_tokens=c.workload.tokens(str(c.param("prompt", "") or "")) if c.param("prompt") else 0,
            new_tokens=int(c.workload["blip2_caption_tokens"]),
            long_side=int(c.param("long_side", 0) or 0),
        )
    ],
    ("caption_vlm", "vlm"): lambda c: [
        Call(
            "generate",
            1,
            "one-sentence caption",
            prompt_tokens=c.workload.p("caption_prompt_tokens"),
            new_tokens=int(c.workload["vlm_caption_tokens"]),
        )
    ],
    ("ground_phrases", "grounder"): _ground_phrases,
    ("region_attributes", "vlm"): _region_attributes,
    ("label_assign", "clip"): lambda c: _crop_classifier(
        c,
        c.workload["regions_per_image"] * c.workload["label_assign_fraction"],
        "object scored against its candidate labels",
    ),
    ("ovss", "clip"): _ovss,
    ("ovss", "vfm"): _ovss,
    ("masks", "sam"): _masks,
    ("dense_caption", "llm"): _dense_caption,
    ("verify", "llm"): _verify,
    ("verify", "detector"): _verify,
    ("verify", "embedder"): _verify,
    ("ground_captions", "embedder"): lambda c: [
        Call(
            "text",
            c.workload["regions_per_image"] * 2,
            "object attributes and caption phrases embedded",
            text_tokens=8,
        )
    ],
    ("extra_context", "llm"): _extra_context,
}
"""Per (stage, slot): the calls one image costs. Keyed by the GranD role, so any manifest's checkpoint fits."""


def default_calls(c: Context) -> list[Call]:
    """One pass per image of whatever the model does, for a (stage, slot) no program describes."""
    c.notes.append(f"no workload program for {c.stage.name}.{c.slot}: assumed one call per image")
    if "generate" in c.kinds:
        return [Call("generate", 1, "one generation (assumed)", prompt_tokens=32, new_tokens=32)]
    if "image" in c.kinds:
        return [Call("image", 1, "one image pass (assumed)")]
    if "text" in c.kinds:
        return [Call("text", 1, "one text (assumed)", text_tokens=16)]
    return []


def stage_calls(c: Context) -> list[Call]:
    program = PROGRAMS.get((c.stage.name, c.slot), default_calls)
    return program(c)
