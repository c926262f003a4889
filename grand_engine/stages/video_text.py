"""The three descriptions of every tracked object, by a VLM (Ref-SAV's data engine: Sa2VA, Yuan et al., 2025,
arXiv:2501.04001, section 3.3 and Figure 3).

* ``video_object_text`` — **object level**: the object's key frame (the sampled frame where its mask is largest;
  ``num_key_frames`` > 1 adds frames spread over its visible span, shown side by side) cropped around the object
  with ``crop_context`` of margin and the object outlined in red. Two questions: its name
  (``prompts/video_object_category.txt``, a short answer normalised to a noun phrase: the object's ``category``)
  and its appearance (``prompts/video_object_level.txt``).
* ``video_scene_text`` — **scene level**: the whole key frame with the object outlined, and the object-level
  description in the prompt (``prompts/video_scene_level.txt``): the object in its surroundings.
* ``video_motion_text`` — **video level**: ``num_frames`` frames spread evenly from the object's first to its last
  visible sampled frame, each with the object outlined, given to a video-capable VLM as one clip at the rate they
  were sampled at, with the object- and scene-level descriptions in the prompt (``prompts/video_motion_level.txt``):
  what the object does over time.

The masks come from ``video_tracks`` (or, with ``masklets: video_masklets``, straight from the selected SA-V
masklets, for runs without SAM 2). Every request is one VLM call under the generation rules of
:mod:`grand_engine.stages.llm_common` (a cut answer is retried once with ``retry_max_tokens``, an empty one once with
another seed, a text longer than ``max_sentences`` sentences is cut); an object whose answer is still unusable keeps
its entry with ``text`` null and ``error`` set, and the video's other objects are unaffected. Seeds:
``stable_seed(seed, video id, stage, object id, purpose)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from grand_engine.runtime.stage import ErrorRecord, Resources, UnitInput, collaborator
from grand_engine.schema import table_schema
from grand_engine.stages.llm_common import Generation, GenerationSettings, LLMStage, render_prompt
from grand_engine.stages.verify import normalise_item
from grand_engine.stages.video_common import (
    by_object,
    frames_of,
    highlight,
    key_positions,
    mask_of,
    object_crop,
    objects_of,
    side_by_side,
    uniform_positions,
)

CATEGORY_PROMPT = "video_object_category.txt"
OBJECT_PROMPT = "video_object_level.txt"
SCENE_PROMPT = "video_scene_level.txt"
MOTION_PROMPT = "video_motion_level.txt"


@dataclass(frozen=True)
class VisualRequest:
    """One VLM request: a prompt with a picture, or with a clip of frames sampled at ``fps``."""

    prompt: str
    image: np.ndarray | None = None
    clip: Sequence[np.ndarray] | None = None
    fps: float = 1.0


class VisualChat:
    """A VLM adapter behind the ``chat`` interface the generation rules call (:func:`~grand_engine.stages.
    llm_common.generate`): each "conversation" is a :class:`VisualRequest`. Pictures go to ``vlm.generate``, clips to
    ``vlm.generate_video`` (a ``video_vlm`` adapter)."""

    def __init__(self, vlm: Any) -> None:
        self.vlm = vlm

    def chat(
        self,
        requests: Sequence[VisualRequest],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: Sequence[int],
    ) -> list[Any]:
        seeds = list(seed)
        out: list[Any] = [None] * len(requests)
        sampling = {"do_sample": temperature > 0, "temperature": temperature, "top_p": top_p}
        pictures = [i for i, r in enumerate(requests) if r.clip is None]
        clips = [i for i, r in enumerate(requests) if r.clip is not None]
        if pictures:
            gens = self.vlm.generate(
                [requests[i].image for i in pictures],
                [requests[i].prompt for i in pictures],
                max_new_tokens=max_new_tokens,
                seed=[seeds[i] for i in pictures],
                **sampling,
            )
            for i, gen in zip(pictures, gens, strict=True):
                out[i] = gen
        if clips:
            if not hasattr(self.vlm, "generate_video"):
                raise TypeError(f"the VLM {type(self.vlm).__name__} takes no video; use a model of family video_vlm")
            gens = self.vlm.generate_video(
                [requests[i].clip for i in clips],
                [requests[i].prompt for i in clips],
                fps=[requests[i].fps for i in clips],
                max_new_tokens=max_new_tokens,
                seed=[seeds[i] for i in clips],
                **sampling,
            )
            for i, gen in zip(clips, gens, strict=True):
                out[i] = gen
        return out


def normalise_category(text: str, max_words: int = 4) -> str | None:
    """The object's name from a short answer: its first line, normalised as checklist items are (lower case, end
    punctuation and a leading article dropped); None when empty or longer than ``max_words`` words."""
    line = next((s for s in (text or "").splitlines() if s.strip()), "")
    name = normalise_item(line)
    return name if name and len(name.split()) <= max_words else None


OBJECT_TEXT = pa.struct(
    [
        ("object_id", pa.int32()),
        ("text", pa.string()),  # the description (null when the VLM gave no usable answer)
        ("finish_reason", pa.string()),  # stop | trimmed | length
        ("frames", pa.list_(pa.int32())),  # the video frames (0-based) shown to the VLM
        ("error", pa.string()),  # why there is no text (null when there is)
    ]
)
"""One object's description at one level."""

OBJECT_LEVEL = pa.struct([("category", pa.string()), *[OBJECT_TEXT.field(i) for i in range(OBJECT_TEXT.num_fields)]])
"""An object-level description with the object's name."""


@dataclass
class VideoTextStage(LLMStage):
    """Base of the three description stages: requests per object, the VLM behind the generation rules."""

    requires: ClassVar[tuple[str, ...]] = ("videos",)
    level: ClassVar[int | None] = None
    model_slots: ClassVar[tuple[str, ...]] = ("vlm",)
    default_resources: ClassVar[Resources] = Resources(gpus=1.0, cpus=1.0, batch_size=4)
    extra_inputs: ClassVar[tuple[str, ...]] = ()  # upstream description stages read

    temperature: float = 0.0  # new: descriptions report what is seen; greedy keeps them reproducible
    top_p: float = 1.0
    max_tokens: int = 160  # new: three sentences of description with room to finish the last
    retry_max_tokens: int = 320  # twice the limit, once, for a cut answer (the generation rules)
    max_sentences: int | None = 3  # the prompts ask for 1 to 3 sentences; longer text is cut
    masklets: str = "video_tracks"  # the table of the objects' masks: video_tracks, or video_masklets without SAM 2
    outline_width: int = 3  # new: pixels of the red outline drawn around the object

    vlm: Any = collaborator()  # the loaded VLM adapter (video_vlm for video_motion_text)

    def inputs(self) -> tuple[str, ...]:
        return ("videos", self.masklets, *self.extra_inputs)

    def setup(self) -> None:
        if self.vlm is None:
            self.vlm = self.load_model("vlm")
        if self.llm is None:
            self.llm = VisualChat(self.vlm)

    # -- the loop --------------------------------------------------------------------------------------------

    purposes: ClassVar[tuple[str, ...]] = ("text",)  # the requests per object, in order (later ones see earlier)

    def view(self, unit: UnitInput, video_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        """What one object's requests need (its picture or clip, upstream texts); ``ValueError`` when it cannot be
        shown (no visible frame, no upstream description)."""
        raise NotImplementedError

    def request(self, view: dict[str, Any], purpose: str, gens: dict[str, Generation]) -> VisualRequest | None:
        """The request of one purpose, given the generations of the earlier ones (None: skip it)."""
        raise NotImplementedError

    def positions(self, obj: dict[str, Any]) -> list[int]:
        """The sampled-frame positions shown for ``obj``."""
        raise NotImplementedError

    def settings_for(self, purpose: str) -> GenerationSettings:
        """The generation settings of one purpose (the stage's own by default)."""
        return self.settings()

    def object_entry(self, obj: dict[str, Any], gens: dict[str, Generation], frames: list[int]) -> dict[str, Any]:
        """The table entry of one object from its generations by purpose."""
        gen = gens.get("text")
        if gen is None:
            return self.failed_entry(obj, "an earlier request of this object gave no usable answer", frames)
        return {
            "object_id": int(obj["object_id"]),
            "text": gen.text if gen.ok else None,
            "finish_reason": gen.finish_reason,
            "frames": frames,
            "error": None if gen.ok else f"{gen.error[0]}: {gen.error[1]}",
        }

    def failed_entry(self, obj: dict[str, Any], error: str, frames: list[int] | None = None) -> dict[str, Any]:
        """The entry of an object without a description."""
        return {
            "object_id": int(obj["object_id"]),
            "text": None,
            "finish_reason": None,
            "frames": frames or [],
            "error": error,
        }

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any] | ErrorRecord]:
        rows: dict[str, list[dict[str, Any]]] = {}
        jobs: list[tuple[str, int, dict[str, Any], list[int], dict[str, Any]]] = []
        for video_id in image_ids:
            objects = objects_of(unit, self.masklets, video_id)
            rows[video_id] = [{} for _ in objects]
            indices = unit.image_row(video_id)["frame_indices"]
            for slot, obj in enumerate(objects):
                frames = [int(indices[p]) for p in self.positions(obj)]
                try:
                    view = self.view(unit, video_id, obj)
                except ValueError as exc:  # nothing to show for this object: its entry says why
                    rows[video_id][slot] = self.failed_entry(obj, f"{type(exc).__name__}: {exc}", frames)
                    continue
                jobs.append((video_id, slot, obj, frames, view))
        gens: list[dict[str, Generation]] = [{} for _ in jobs]
        for purpose in self.purposes:
            picked, convs = [], []
            for k, (_, _, _, _, view) in enumerate(jobs):
                req = self.request(view, purpose, gens[k])
                if req is not None:
                    picked.append(k)
                    convs.append(req)
            seeds = [self.seed_for(jobs[k][0], int(jobs[k][2]["object_id"]), purpose) for k in picked]
            for k, gen in zip(picked, self.complete(convs, seeds, self.settings_for(purpose)), strict=True):
                gens[k][purpose] = gen
        for (video_id, slot, obj, frames, _), got in zip(jobs, gens, strict=True):
            rows[video_id][slot] = self.object_entry(obj, got, frames)
        return [{"image_id": video_id, "objects": rows[video_id]} for video_id in image_ids]

    @staticmethod
    def upstream_text(unit: UnitInput, stage: str, video_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        """The entry of ``obj`` in an upstream description stage; ``ValueError`` when it has no text there."""
        entry = by_object(unit, stage, video_id).get(int(obj["object_id"]))
        if entry is None or not entry.get("text"):
            reason = (entry or {}).get("error") or "no entry"
            raise ValueError(f"object {obj['object_id']} has no {stage} description ({reason})")
        return entry


@dataclass
class VideoObjectText(VideoTextStage):
    """Object level: name and appearance from the highlighted crop(s) at the key frame(s)."""

    name: ClassVar[str] = "video_object_text"
    schema: ClassVar[pa.Schema] = table_schema(("objects", pa.list_(OBJECT_LEVEL)))
    prompts: ClassVar[tuple[str, ...]] = (CATEGORY_PROMPT, OBJECT_PROMPT)

    num_key_frames: int = 1  # Ref-SAV describes an object from a crop at one key frame; more are shown side by side
    crop_context: float = 0.2  # new: margin around the object's box, as a fraction of its size on each side
    category_max_tokens: int = 8  # new: a name of one to three words
    category_retry_max_tokens: int = 16
    category_max_words: int = 4  # new: a longer "name" is a sentence and is refused

    purposes: ClassVar[tuple[str, ...]] = ("category", "text")

    def positions(self, obj: dict[str, Any]) -> list[int]:
        return key_positions(obj["areas"], self.num_key_frames)

    def view(self, unit: UnitInput, video_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        positions = self.positions(obj)
        if not positions:
            raise ValueError(f"object {obj['object_id']} is visible in no sampled frame")
        frames = frames_of(unit, video_id, positions)
        crops = [
            object_crop(f, mask_of(obj, p), self.crop_context, self.outline_width)
            for f, p in zip(frames, positions, strict=True)
        ]
        return {"image": side_by_side(crops)}

    def request(self, view: dict[str, Any], purpose: str, gens: dict[str, Generation]) -> VisualRequest | None:
        if purpose == "category":
            return VisualRequest(render_prompt(CATEGORY_PROMPT), image=view["image"])
        category = self.category(gens)
        if category is None:
            return None
        return VisualRequest(render_prompt(OBJECT_PROMPT, category=category), image=view["image"])

    def category(self, gens: dict[str, Generation]) -> str | None:
        gen = gens.get("category")
        return normalise_category(gen.text, self.category_max_words) if gen is not None and gen.ok else None

    def settings_for(self, purpose: str) -> GenerationSettings:
        if purpose != "category":
            return self.settings()
        return GenerationSettings(
            max_tokens=self.category_max_tokens,
            retry_max_tokens=self.category_retry_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            max_sentences=1,
            accept_truncated=True,  # a name cut by the limit is still a name; normalisation judges it
        )

    def object_entry(self, obj: dict[str, Any], gens: dict[str, Generation], frames: list[int]) -> dict[str, Any]:
        category = self.category(gens)
        if category is None:
            answer = gens["category"].text if "category" in gens else ""
            return self.failed_entry(obj, f"no usable object name in the answer {answer[:80]!r}", frames)
        return {"category": category, **super().object_entry(obj, gens, frames)}

    def failed_entry(self, obj: dict[str, Any], error: str, frames: list[int] | None = None) -> dict[str, Any]:
        return {"category": None, **super().failed_entry(obj, error, frames)}


@dataclass
class VideoSceneText(VideoTextStage):
    """Scene level: the whole key frame with the object outlined, and its object-level description."""

    name: ClassVar[str] = "video_scene_text"
    schema: ClassVar[pa.Schema] = table_schema(("objects", pa.list_(OBJECT_TEXT)))
    prompts: ClassVar[tuple[str, ...]] = (SCENE_PROMPT,)
    extra_inputs: ClassVar[tuple[str, ...]] = ("video_object_text",)

    def positions(self, obj: dict[str, Any]) -> list[int]:
        return key_positions(obj["areas"], 1)

    def view(self, unit: UnitInput, video_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        upstream = self.upstream_text(unit, "video_object_text", video_id, obj)
        positions = self.positions(obj)
        if not positions:
            raise ValueError(f"object {obj['object_id']} is visible in no sampled frame")
        (frame,) = frames_of(unit, video_id, positions)
        image = highlight(frame, mask_of(obj, positions[0]), self.outline_width)
        return {"image": image, "category": upstream["category"], "object_text": upstream["text"]}

    def request(self, view: dict[str, Any], purpose: str, gens: dict[str, Generation]) -> VisualRequest | None:
        prompt = render_prompt(SCENE_PROMPT, category=view["category"], object_text=view["object_text"])
        return VisualRequest(prompt, image=view["image"])


@dataclass
class VideoMotionText(VideoTextStage):
    """Video level: frames spread over the object's visible span, outlined, as one clip to a video VLM."""

    name: ClassVar[str] = "video_motion_text"
    schema: ClassVar[pa.Schema] = table_schema(("objects", pa.list_(OBJECT_TEXT)))
    prompts: ClassVar[tuple[str, ...]] = (MOTION_PROMPT,)
    extra_inputs: ClassVar[tuple[str, ...]] = ("video_object_text", "video_scene_text")

    num_frames: int = 8  # new: frames of the clip, spread evenly over the object's visible span (Ref-SAV samples
    # the video uniformly; Qwen2.5-VL merges frames in pairs, so an even count wastes none)

    def positions(self, obj: dict[str, Any]) -> list[int]:
        return uniform_positions(obj["areas"], self.num_frames)

    def view(self, unit: UnitInput, video_id: str, obj: dict[str, Any]) -> dict[str, Any]:
        looks = self.upstream_text(unit, "video_object_text", video_id, obj)
        scene = self.upstream_text(unit, "video_scene_text", video_id, obj)
        positions = self.positions(obj)
        if not positions:
            raise ValueError(f"object {obj['object_id']} is visible in no sampled frame")
        frames = frames_of(unit, video_id, positions)
        clip = []
        for frame, p in zip(frames, positions, strict=True):
            seg = obj["masks"][p]
            clip.append(frame if seg is None else highlight(frame, mask_of(obj, p), self.outline_width))
        row = unit.image_row(video_id)
        indices = row["frame_indices"]
        span = (indices[positions[-1]] - indices[positions[0]]) / float(row["fps"] or 1.0)
        rate = (len(positions) - 1) / span if len(positions) > 1 and span > 0 else float(row["sample_fps"])
        return {
            "clip": clip,
            "fps": rate,
            "category": looks["category"],
            "object_text": looks["text"],
            "scene_text": scene["text"],
        }

    def request(self, view: dict[str, Any], purpose: str, gens: dict[str, Generation]) -> VisualRequest | None:
        prompt = render_prompt(
            MOTION_PROMPT, category=view["category"], object_text=view["object_text"], scene_text=view["scene_text"]
        )
        return VisualRequest(prompt, clip=view["clip"], fps=view["fps"])
