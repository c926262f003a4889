"""``landmark``: the scene category of each image, coarse then fine (GranD step 1).

**VLM method** (``method="vlm"``, the reference's): two multiple-choice questions per image to the ``vlm`` slot.

1. The coarse question (prompt file ``prompts/landmark_coarse.txt``) lists the 4 coarse categories of
   :data:`LANDMARK_TAXONOMY` as a numbered list (``$options``) and asks for the option only.
2. For every image whose coarse answer parsed, the fine question (``prompts/landmark_fine.txt``, ``$category``
   is the chosen coarse category in lower case) lists that category's sub-types. Images whose coarse answer did
   not parse get no fine question (as the reference: empty coarse → empty fine).

Both are sampled at ``temperature`` (0.2, step 1) with at most ``max_new_tokens`` (1024) new tokens; sampling is
seeded per image and question from ``seed`` and the image id, so an answer does not depend on which images share
its batch and reruns reproduce it (the reference sampled unseeded, §14.24).

**Parsing** (:func:`parse_choice`, step 1): the answer is lower-cased with whitespace collapsed; the first option
*in list order* whose lower-cased name is a substring of it wins. Deviation: when no name matches and the whole
answer is an option number (``2``, ``2.``, ``(2)``, ``option 2``), that option wins — the prompt numbers the
options and models often answer with the number, which the reference threw away. No match → the category is
``""`` (the reference's value) and ``reason`` says which answer failed and shows it; ``reason`` is null when
both answers parsed. An answer cut by the token limit is reported as such in ``reason``.

**CLIP method** (``method="clip"``, much cheaper, no reference counterpart): zero-shot classification with the
``clip`` slot, same two steps — the image embedding against ``clip_template`` filled with each coarse option
(lower case), argmax; then against the chosen category's sub-types, argmax. It always answers, so ``reason`` is
null.

Only the slot of the chosen method needs a model; the other may be left empty in the manifest.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from grand_engine.resources import prompt_file
from grand_engine.runtime.stage import Batching, Resources, Stage, UnitInput, collaborator
from grand_engine.schema import table_schema

LANDMARK_TAXONOMY: dict[str, tuple[str, ...]] = {
    "Indoor scene": ("Living space", "Work space", "Public space", "Industrial space"),
    "Outdoor scene": ("Urban landscape", "Rural landscape", "Natural landscape"),
    "Transportation scene": ("Road", "Airport", "Train station", "Port and harbor"),
    "Sports and recreation scene": ("Sporting venue", "Recreational area", "Gym and fitness center"),
}
"""The reference's 4 coarse categories and their 14 fine categories, in the reference's list order (step 1)."""

LANDMARK_SCHEMA = table_schema(
    ("category", pa.string()),
    ("fine_category", pa.string()),
    ("reason", pa.string()),
    version="1",
)
"""``category`` / ``fine_category`` in taxonomy spelling (``""`` when not determined), ``reason`` why not."""

METHODS = ("vlm", "clip")
MAX_ANSWER_IN_REASON = 200
"""Characters of an unparsed answer quoted in ``reason``."""

_NUMBER_ANSWER = re.compile(r"\(?(?:option\s*)?(\d+)\s*[.):]?")


def render_options(options: Sequence[str]) -> str:
    """The numbered option list of a prompt: ``1. Indoor scene`` … one per line."""
    return "\n".join(f"{i}. {option}" for i, option in enumerate(options, start=1))


def parse_choice(answer: str | None, options: Sequence[str]) -> str | None:
    """The option an answer chose, or ``None`` (see the module docstring for the rule)."""
    text = " ".join(str(answer or "").lower().split())
    if not text:
        return None
    for option in options:
        if " ".join(option.lower().split()) in text:
            return option
    match = _NUMBER_ANSWER.fullmatch(text)
    if match is not None:
        number = int(match.group(1))
        if 1 <= number <= len(options):
            return options[number - 1]
    return None


def question_seed(seed: int, image_id: str, question: str) -> int:
    """A sampling seed per (stage seed, image, question), stable across runs and batch compositions."""
    digest = hashlib.sha256(f"{int(seed)}:{image_id}:{question}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _quote(answer: str) -> str:
    text = " ".join(answer.split())
    if len(text) > MAX_ANSWER_IN_REASON:
        text = text[:MAX_ANSWER_IN_REASON] + "…"
    return repr(text)


def unparsed_reason(question: str, answer: str, finish_reason: str, category: str | None = None) -> str:
    """The ``reason`` text for an answer that matched no option."""
    which = f"the {question} answer" if category is None else f"the {question} answer for {category!r}"
    cut = " (cut at max_new_tokens)" if finish_reason == "length" else ""
    return f"{which} matched no option{cut}: {_quote(answer)}"


@dataclass
class LandmarkStage(Stage):
    """Coarse and fine scene category per image: VLM multiple choice (step 1) or CLIP zero-shot."""

    name: ClassVar[str] = "landmark"
    requires: ClassVar[tuple[str, ...]] = ("images",)
    level: ClassVar[int | None] = 1
    version: ClassVar[str] = "1"
    schema: ClassVar[pa.Schema] = LANDMARK_SCHEMA
    batching: ClassVar[Batching] = "batch"
    needs_pixels: ClassVar[bool] = True
    model_slots: ClassVar[tuple[str, ...]] = ("vlm", "clip")
    default_resources: ClassVar[Resources] = Resources(gpus=0.5, cpus=1.0, batch_size=8)

    method: str = "vlm"  # "vlm" (step 1: LLaVA two-step multiple choice) or "clip" (zero-shot, cheaper)
    temperature: float = 0.2  # step 1: sampled with temperature 0.2 (0 = greedy)
    top_p: float = 1.0  # step 1: no nucleus cut
    max_new_tokens: int = 1024  # step 1: max_new_tokens 1024
    seed: int = 0  # base of the per-image, per-question sampling seeds
    coarse_prompt: str = "landmark_coarse.txt"  # step 1 coarse question (prompt file, `$options`)
    fine_prompt: str = "landmark_fine.txt"  # step 1 fine question (prompt file, `$category`, `$options`)
    clip_template: str = "a photo of the {}."  # CLIP method: text for each option (`{}` = option, lower case)

    model: Any = collaborator()  # the VLM or CLIP adapter of `method`; loaded from that slot when None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"landmark: method must be one of {METHODS}, got {self.method!r}")
        if self.method == "clip" and "{}" not in self.clip_template:
            raise ValueError(f"landmark: clip_template must contain '{{}}', got {self.clip_template!r}")

    def setup(self) -> None:
        if self.method == "vlm":  # read the prompts first: a missing prompt file fails before the model loads
            self.coarse_question()
            self.fine_question(next(iter(LANDMARK_TAXONOMY)))
        if self.model is None:
            self.model = self.load_model(self.method)

    # -- prompts --------------------------------------------------------------------------------

    def _template(self, name: str) -> string.Template:
        cache = self.__dict__.setdefault("_templates", {})
        if name not in cache:
            text = prompt_file(name).read_text(encoding="utf-8").strip()
            if not text:
                raise ValueError(f"stage 'landmark': prompt file {name!r} is empty")
            cache[name] = string.Template(text)
        return cache[name]

    def coarse_question(self) -> str:
        """The rendered coarse question (prompt file ``coarse_prompt``, ``$options`` = the numbered categories)."""
        return self._template(self.coarse_prompt).substitute(options=render_options(list(LANDMARK_TAXONOMY)))

    def fine_question(self, category: str) -> str:
        """The rendered fine question for coarse ``category`` (``$category`` in lower case, ``$options``)."""
        return self._template(self.fine_prompt).substitute(
            category=category.lower(), options=render_options(LANDMARK_TAXONOMY[category])
        )

    # -- processing -----------------------------------------------------------------------------

    def process_batch(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` by the configured ``method``."""
        if self.method == "vlm":
            return self.classify_vlm(unit, image_ids)
        return self.classify_clip(unit, image_ids)

    def _generate(self, images: list[Any], prompts: list[str], seeds: list[int]) -> list[Any]:
        return self.model.generate(
            images,
            prompts,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.temperature > 0,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=seeds,
        )

    def classify_vlm(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` with the two-step VLM multiple choice (one ``generate`` call per step)."""
        images = [unit.pixels(i) for i in image_ids]
        coarse_options = list(LANDMARK_TAXONOMY)
        answers = self._generate(
            images,
            [self.coarse_question()] * len(images),
            [question_seed(self.seed, i, "coarse") for i in image_ids],
        )
        rows: list[dict[str, Any]] = []
        fine_jobs: list[int] = []
        for k, (image_id, gen) in enumerate(zip(image_ids, answers, strict=True)):
            category = parse_choice(gen.text, coarse_options)
            if category is None:
                reason = unparsed_reason("coarse", gen.text, gen.finish_reason)
                rows.append({"image_id": image_id, "category": "", "fine_category": "", "reason": reason})
            else:
                rows.append({"image_id": image_id, "category": category, "fine_category": "", "reason": None})
                fine_jobs.append(k)
        if fine_jobs:
            fine_answers = self._generate(
                [images[k] for k in fine_jobs],
                [self.fine_question(rows[k]["category"]) for k in fine_jobs],
                [question_seed(self.seed, image_ids[k], "fine") for k in fine_jobs],
            )
            for k, gen in zip(fine_jobs, fine_answers, strict=True):
                category = rows[k]["category"]
                fine = parse_choice(gen.text, LANDMARK_TAXONOMY[category])
                if fine is None:
                    rows[k]["reason"] = unparsed_reason("fine", gen.text, gen.finish_reason, category)
                else:
                    rows[k]["fine_category"] = fine
        return rows

    def classify_clip(self, unit: UnitInput, image_ids: list[str]) -> list[dict[str, Any]]:
        """Rows for ``image_ids`` by two-step CLIP zero-shot classification (images encoded once)."""
        from grand_engine.models.clip import softmax_scores

        embeds = self.model.encode_images([unit.pixels(i) for i in image_ids])
        coarse_options = list(LANDMARK_TAXONOMY)
        coarse = softmax_scores(embeds, self.model.encode_texts(self._clip_texts(coarse_options)))
        rows = []
        for k, image_id in enumerate(image_ids):
            category = coarse_options[int(coarse[k].argmax())]
            fine_options = LANDMARK_TAXONOMY[category]
            fine = softmax_scores(embeds[k : k + 1], self.model.encode_texts(self._clip_texts(fine_options)))[0]
            rows.append(
                {
                    "image_id": image_id,
                    "category": category,
                    "fine_category": fine_options[int(fine.argmax())],
                    "reason": None,
                }
            )
        return rows

    def _clip_texts(self, options: Sequence[str]) -> list[str]:
        return [self.clip_template.replace("{}", option.lower()) for option in options]
