"""Known-answer tests per adapter family: real tiny checkpoints whose output head is an oracle (see ``known.py``).

Every test feeds images with a white rectangle at a known place (odd non-square, smaller and larger than the
processor's input, EXIF-rotated) and checks the final pixel boxes, masks, depth values and labels.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from grand_engine.config import ModelSpec
from grand_engine.models.base import load_adapter
from tests.models.known import CASE_IDS, CASES, Case, assert_box, bright_box_in_input, bright_image, mask_box

HIGH, LOW = 10.0, -10.0


# --- closed-set detectors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["dfine", "rtdetr"])
def detector(request, tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / request.param), family="detector"))


def _detector_oracle(model, class_id: int):
    queries = model.config.num_queries
    classes = len(model.config.id2label)

    def forward(pixel_values, **_):
        b = pixel_values.shape[0]
        logits = torch.full((b, queries, classes), LOW, dtype=pixel_values.dtype)
        boxes = torch.full((b, queries, 4), 0.05, dtype=pixel_values.dtype)
        for row in range(b):
            boxes[row, 0] = torch.tensor(bright_box_in_input(pixel_values[row, 0].float().numpy()))
            logits[row, 0, class_id] = HIGH
        return SimpleNamespace(logits=logits, pred_boxes=boxes)

    return forward


def test_closed_set_detector_boxes_and_labels(detector, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = detector.class_names.index("cat")
    monkeypatch.setattr(detector.model, "forward", _detector_oracle(detector.model, cat))
    detector.batch_size = 3  # the four cases go in two batches of mixed sizes
    found = detector.detect([c.image for c in CASES], threshold=0.5)
    for case, det in zip(CASES, found, strict=True):
        assert det.labels == ["cat"], case.name
        assert det.label_ids.tolist() == [cat]
        assert det.scores[0] == pytest.approx(1 / (1 + np.exp(-HIGH)), rel=1e-4)
        assert_box(det.boxes[0], case, (640, 640))  # the real processors stretch every image to 640x640


# --- OWL-ViT / OWLv2 ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["owlvit", "owlv2"])
def owl(request, tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / request.param), family="owl"))


def _owl_oracle(monkeypatch: pytest.MonkeyPatch, owl, target_query: str) -> None:
    """Patch 0 of every image predicts the white rectangle (in the processed frame, the padded square for OWLv2)
    and scores HIGH for the query whose embedding is ``target_query``'s; everything else scores LOW."""
    model = owl.model
    target = owl.text_embeddings([target_query])[0]
    seen: dict[str, torch.Tensor] = {}
    real_embedder = model.image_embedder

    def image_embedder(pixel_values, **kwargs):
        seen["pixels"] = pixel_values
        return real_embedder(pixel_values=pixel_values, **kwargs)

    def box_predictor(feats, feature_map, *args, **kwargs):
        pixels = seen["pixels"]
        boxes = torch.full((feats.shape[0], feats.shape[1], 4), 0.05, dtype=feats.dtype)
        for row in range(feats.shape[0]):
            boxes[row, 0] = torch.tensor(bright_box_in_input(pixels[row, 0].float().numpy()))
        return boxes

    def class_predictor(image_feats, query_embeds, query_mask=None):
        logits = torch.full((1, image_feats.shape[1], query_embeds.shape[1]), LOW)
        hits = [j for j in range(query_embeds.shape[1]) if torch.allclose(query_embeds[0, j], target)]
        logits[0, 0, hits] = HIGH
        return logits, None

    monkeypatch.setattr(model, "image_embedder", image_embedder)
    monkeypatch.setattr(model, "box_predictor", box_predictor)
    monkeypatch.setattr(model, "class_predictor", class_predictor)


def _owl_input_hw(owl, case: Case) -> tuple[float, float]:
    """OWLv2 resizes the padded square of side max(h, w) to 960; OWL-ViT stretches the image to 768x768."""
    if owl.pads_to_square:
        scale = 960 / max(case.height, case.width)
        return case.height * scale, case.width * scale  # the image's own extent inside the 960 frame
    return 768, 768


def test_owl_boxes_and_query_labels(owl, monkeypatch: pytest.MonkeyPatch) -> None:
    _owl_oracle(monkeypatch, owl, "a cat")
    queries = ["a dog", "a cat", "trees"]
    found = owl.detect([c.image for c in CASES], [queries] * len(CASES), threshold=0.5)
    for case, det in zip(CASES, found, strict=True):
        assert det.labels == ["a cat"] and det.label_ids.tolist() == [1], case.name
        assert_box(det.boxes[0], case, _owl_input_hw(owl, case))
    # a fixed vocabulary: the label id indexes the vocabulary
    owl.set_vocabulary(["dog", "a cat"])
    vocab = owl.detect_vocabulary([CASES[0].image], threshold=0.5)[0]
    assert vocab.labels == ["a cat"] and vocab.label_ids.tolist() == [1]
    assert_box(vocab.boxes[0], CASES[0], _owl_input_hw(owl, CASES[0]))


# --- Grounding DINO -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gdino(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "grounding-dino"), family="grounding_dino"))


def _gdino_oracle(monkeypatch: pytest.MonkeyPatch, gdino, word: str) -> None:
    """Query 0 predicts the white rectangle, normalised over the image's unpadded extent (the pixel mask), and
    scores HIGH on the prompt tokens of ``word``."""
    model = gdino.model
    word_ids = gdino.tokenizer(word, add_special_tokens=False)["input_ids"]
    queries = model.config.num_queries

    def forward(pixel_values, input_ids, pixel_mask=None, **_):
        b, text_len = pixel_values.shape[0], model.config.max_text_len
        logits = torch.full((b, queries, text_len), LOW)
        boxes = torch.full((b, queries, 4), 0.05)
        for row in range(b):
            valid = pixel_mask[row].bool()
            valid_hw = (int(valid.any(dim=1).sum()), int(valid.any(dim=0).sum()))
            boxes[row, 0] = torch.tensor(bright_box_in_input(pixel_values[row, 0].float().numpy(), valid_hw))
            for pos, token in enumerate(input_ids[row].tolist()):
                if token in word_ids:
                    logits[row, 0, pos] = HIGH
        return SimpleNamespace(logits=logits, pred_boxes=boxes)

    monkeypatch.setattr(model, "forward", forward)


def _gdino_input_hw(case: Case) -> tuple[float, float]:
    """Shortest edge 800, longest at most 1333, aspect kept."""
    scale = min(800 / min(case.height, case.width), 1333 / max(case.height, case.width))
    return case.height * scale, case.width * scale


def test_grounding_dino_boxes_labels_and_phrases(gdino, monkeypatch: pytest.MonkeyPatch) -> None:
    _gdino_oracle(monkeypatch, gdino, "cat")
    gdino.batch_size = 4  # all four sizes in one padded batch
    found = gdino.detect([c.image for c in CASES], [["dog", "cat", "trees"]] * len(CASES), threshold=0.5)
    for case, det in zip(CASES, found, strict=True):
        assert det.labels == ["cat"] and det.label_ids.tolist() == [1], case.name
        assert_box(det.boxes[0], case, _gdino_input_hw(case))
    for case in CASES[:2]:
        dog, cat = gdino.ground_phrases(case.image, "dog and cat", [(0, 3), (8, 11)], threshold=0.5)
        assert dog is None
        box, score = cat
        assert score == pytest.approx(1 / (1 + np.exp(-HIGH)), rel=1e-4)
        assert_box(box, case, _gdino_input_hw(case))


# --- SAM box prompts ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "sam-vit-tiny"), family="sam"))


def _sam_oracle(monkeypatch: pytest.MonkeyPatch, sam) -> None:
    """The mask decoder returns, for each box prompt, low-resolution logits that are HIGH exactly inside the prompt
    box (read from the prompt encoder's input, in the 1024 frame) and LOW elsewhere."""
    model = sam.model
    seen: dict[str, torch.Tensor] = {}
    real_prompt_encoder = model.prompt_encoder.forward

    def prompt_encoder(points, boxes, masks):
        seen["boxes"] = boxes
        return real_prompt_encoder(points=points, boxes=boxes, masks=masks)

    def mask_decoder(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, **_):
        boxes = seen["boxes"]
        side = model.image_encoder.img_size // 4  # low-resolution masks are a quarter of the input side
        grid = (torch.arange(side, dtype=torch.float32) + 0.5) * 4  # low-res cell centres in input pixels
        logits = torch.full((len(boxes), 1, side, side), LOW)
        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            inside_y = (grid >= y1) & (grid < y2)
            inside_x = (grid >= x1) & (grid < x2)
            logits[k, 0][inside_y[:, None] & inside_x[None, :]] = HIGH
        return logits, torch.full((len(boxes), 1), 0.9)

    monkeypatch.setattr(model.prompt_encoder, "forward", prompt_encoder)
    monkeypatch.setattr(model.mask_decoder, "forward", mask_decoder)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sam_box_prompts_give_the_box_back_as_a_mask(sam, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    from grand_engine.io import rle

    _sam_oracle(monkeypatch, sam)
    h, w = case.height, case.width
    other = (0, 0, max(2, w // 5), max(2, h // 4))
    prompts = [case.box, other, case.box]
    masks, scores = sam.segment_boxes_with_scores(case.image, prompts, max_boxes_per_call=2)
    assert scores.tolist() == pytest.approx([0.9, 0.9, 0.9])
    low_res = (h * 256 / max(h, w), w * 256 / max(h, w))  # the mask logits' frame: the image's extent at 256
    for prompt, mask in zip(prompts, masks, strict=True):
        assert mask["size"] == [h, w]
        decoded = rle.decode(mask)
        found = mask_box(decoded)
        np.testing.assert_allclose(found, prompt, atol=1.0 + max(h / low_res[0], w / low_res[1]))
        x1, y1, x2, y2 = prompt
        assert decoded[y1:y2, x1:x2].mean() > 0.9  # filled, not an outline


# --- depth ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "white"), [("depth-dpt-beit", 1.0), ("depth-anything-v2", (1 - 0.485) / 0.229)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depth_map_follows_the_image(tiny_dir: Path, name: str, white: float, dtype: str, monkeypatch) -> None:
    """The oracle's relative inverse depth is the normalised red channel of the network's input: the white
    rectangle (in the lower right of every case) is "near", and its value is the processor's normalised white."""
    adapter = load_adapter(ModelSpec(id=str(tiny_dir / name), family="depth", dtype=dtype))

    def forward(pixel_values, **_):
        return SimpleNamespace(predicted_depth=pixel_values[:, 0].clone())

    monkeypatch.setattr(adapter.model, "forward", forward)
    maps = adapter.predict([c.image for c in CASES], long_side=256)
    for case, dm in zip(CASES, maps, strict=True):
        assert dm.image_size == (case.height, case.width)
        assert max(dm.depth.shape) == 256
        near = dm.depth > (dm.depth.max() + dm.depth.min()) / 2
        x1, y1, x2, y2 = mask_box(near)
        found = np.array([x1, y1, x2, y2], np.float64) * dm.scale
        np.testing.assert_allclose(found, case.box, atol=1.0 + 2 * dm.scale, err_msg=case.name)
        bx1, by1, bx2, by2 = (int(v / dm.scale) for v in case.box)
        inner = dm.depth[by1 + 2 : by2 - 2, bx1 + 2 : bx2 - 2]
        if inner.size:
            assert float(np.median(inner)) == pytest.approx(white, rel=0.02)
        # nearer at the bottom: the lower half of the map holds the near rectangle
        assert dm.depth[dm.depth.shape[0] // 2 :].mean() > dm.depth[: dm.depth.shape[0] // 2].mean()


# --- CLIP label assignment ----------------------------------------------------------------------------------------


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _assert_colour_labels(embedder) -> None:
    embedder.batch_size = 2
    crops = [
        bright_image(7, 3, (0, 0, 7, 3), COLOURS["red"]),
        bright_image(900, 700, (0, 0, 900, 700), COLOURS["blue"]),
        bright_image(333, 41, (0, 0, 333, 41), COLOURS["green"]),
        bright_image(64, 64, (0, 0, 64, 64), COLOURS["red"]),
    ]
    labels = [["green", "red", "blue"], ["red", "blue"], ["green", "blue", "red"], ["blue", "red"]]
    probs = embedder.classify_each(crops, labels)
    picked = [options[int(np.argmax(p))] for options, p in zip(labels, probs, strict=True)]
    assert picked == ["red", "blue", "green", "red"]
    assert all(float(p.max()) > 0.99 for p in probs)  # softmax(100 cos): cos 1 against cos 0


@pytest.mark.parametrize("name", ["clip-vit", "clip-eva02"])
def test_clip_label_assignment_by_colour(tiny_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle embeds an image as its mean colour (un-normalised from the network's real input) and the labels
    "red", "green", "blue" as the RGB axes: every crop must get its own colour, whatever its size, among its own
    candidate labels, in order."""
    clip = load_adapter(ModelSpec(id=f"local-dir:{tiny_dir / name}", family="clip"))
    mean = torch.tensor(clip.preprocess.transforms[-1].mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.preprocess.transforms[-1].std).view(1, 3, 1, 1)
    dim = clip.embed_dim
    axes = {tuple(clip.tokenizer([c])[0].tolist()): k for k, c in enumerate(COLOURS)}

    def encode_image(x, normalize=True):
        rgb = (x.float() * std + mean).mean(dim=(2, 3))
        out = torch.zeros(len(x), dim)
        out[:, :3] = rgb
        return torch.nn.functional.normalize(out, dim=-1)

    def encode_text(tokens, normalize=True):
        out = torch.zeros(len(tokens), dim)
        for row, t in enumerate(tokens.tolist()):
            out[row, axes.get(tuple(t), 3)] = 1.0
        return out

    monkeypatch.setattr(clip.model, "encode_image", encode_image)
    monkeypatch.setattr(clip.model, "encode_text", encode_text)
    _assert_colour_labels(clip)


# --- VLM captioning (decoder-only) ------------------------------------------------------------------------------


def _colour_word(pixels: torch.Tensor) -> str:
    """The dominant primary colour of one normalised input image (channel means; normalisation is monotonic)."""
    return list(COLOURS)[int(pixels.float().mean(dim=(1, 2)).argmax())]


def _row_colours(pixel_values: torch.Tensor, grid_thw: torch.Tensor | None) -> list[str]:
    """One colour word per image: from ``(B, 3, H, W)`` pixels, or from Qwen-VL's flattened patches (one row per
    patch of ``3 x temporal x patch x patch`` values, ``grid_thw`` patches per image)."""
    if grid_thw is None:
        return [_colour_word(row) for row in pixel_values]
    words, start = [], 0
    for t, h, w in grid_thw.tolist():
        patches = pixel_values[start : start + t * h * w].float()
        start += t * h * w
        per_channel = patches.reshape(len(patches), 3, -1).mean(dim=(0, 2))
        words.append(list(COLOURS)[int(per_channel.argmax())])
    return words


@pytest.mark.parametrize("name", ["llava", "blip2", "qwen3-vl"])
def test_vlm_caption_names_each_images_colour(tiny_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle ``generate`` writes "a <colour> square" for each row's own pixels and appends it to the prompt,
    as decoder-only generation does; the adapter must return each image's caption, in input order, without the
    prompt, padding or end token."""
    vlm = load_adapter(ModelSpec(id=str(tiny_dir / name), family="vlm"))
    tok = vlm.tokenizer

    def generate(input_ids, pixel_values, image_grid_thw=None, **_):
        colours = _row_colours(pixel_values, image_grid_thw)
        rows = []
        for row in range(len(input_ids)):
            words = tok.encode(f"a {colours[row]} square", add_special_tokens=False)
            rows.append(input_ids[row].tolist() + words + [tok.eos_token_id])
        longest = max(len(r) for r in rows)
        return torch.tensor([r + [tok.pad_token_id] * (longest - len(r)) for r in rows])

    monkeypatch.setattr(vlm.model, "generate", generate)
    vlm.max_batch_size = 2
    images = [
        bright_image(301, 199, (0, 0, 301, 199), COLOURS["red"]),
        bright_image(45, 37, (0, 0, 45, 37), COLOURS["blue"]),
        bright_image(1501, 1123, (0, 0, 1501, 1123), COLOURS["green"]),
    ]
    out = vlm.generate(images, ["Describe the image.", "What is this?", "Describe the image."], max_new_tokens=32)
    assert [g.text for g in out] == ["a red square", "a blue square", "a green square"]
    assert [g.finish_reason for g in out] == ["stop"] * 3


# --- Florence-2: dense region captions, region descriptions, phrase grounding ------------------------------------


@pytest.fixture(scope="module")
def florence(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "florence2"), family="vlm"))


def _loc(tok, value: float) -> int:
    return tok.convert_tokens_to_ids(f"<loc_{min(max(int(value * 1000), 0), 999)}>")


def _florence_oracle(monkeypatch: pytest.MonkeyPatch, florence) -> None:
    """Encoder-decoder ``generate`` (decoder start token first). A region prompt (four ``<loc_i>`` in the input) is
    answered with the colour under that region of the network's 768x768 input; any other prompt with "cat" and the
    white rectangle's bins read from the input, followed by the caption's phrase for grounding prompts.

    The adapter encodes each image once and hands ``generate`` the encoder's output: the vision tower is replaced by
    one that keeps each network input and marks its features with the input's number, and the text encoder by the
    identity, so every row's image-token slots say which network input it was given."""
    from transformers.modeling_outputs import BaseModelOutput

    tok = florence.tokenizer
    first_loc = tok.convert_tokens_to_ids("<loc_0>")
    start = florence.model.generation_config.decoder_start_token_id
    inputs: list[torch.Tensor] = []
    tokens = florence.processor.num_image_tokens
    width = florence.model.config.text_config.d_model

    def vision(pixel_values, **_):
        marks = []
        for image in pixel_values:
            inputs.append(image)
            marks.append(torch.full((1, tokens, width), float(len(inputs))))
        return SimpleNamespace(pooler_output=torch.cat(marks))

    class Identity(torch.nn.Module):
        def forward(self, inputs_embeds, **_):
            return BaseModelOutput(last_hidden_state=inputs_embeds)

    monkeypatch.setattr(florence.model, "get_image_features", vision)
    monkeypatch.setitem(florence.model.model.language_model._modules, "encoder", Identity())  # a child module

    def generate(input_ids, encoder_outputs, **_):
        image_slot = input_ids == florence.model.config.image_token_id
        rows = []
        for row in range(len(input_ids)):
            ids = input_ids[row].tolist()
            bins = [t - first_loc for t in ids if first_loc <= t < first_loc + 1000]
            mark = encoder_outputs.last_hidden_state[row][image_slot[row]][0, 0]
            pixels = inputs[int(mark) - 1]
            if len(bins) == 4:
                side = pixels.shape[-1]
                x1, y1, x2, y2 = (int((b + 0.5) * side / 1000) for b in bins)
                words = tok.encode(_colour_word(pixels[:, y1:y2, x1:x2]), add_special_tokens=False)
            else:
                cx, cy, w, h = bright_box_in_input(pixels[0].float().numpy())
                text = tok.decode(ids, skip_special_tokens=True)
                phrase = "a cat" if "a cat" in text else "cat"
                words = tok.encode(phrase, add_special_tokens=False) + [
                    _loc(tok, cx - w / 2),
                    _loc(tok, cy - h / 2),
                    _loc(tok, cx + w / 2),
                    _loc(tok, cy + h / 2),
                ]
            rows.append([start, *words, tok.eos_token_id])
        longest = max(len(r) for r in rows)
        return torch.tensor([r + [tok.pad_token_id] * (longest - len(r)) for r in rows])

    monkeypatch.setattr(florence.model, "generate", generate)


def _florence_tolerance(case: Case) -> float:
    """One of 1000 bins, one 768-frame pixel, and one for the processor's integer truncation."""
    return 2.0 + case.width / 1000 + max(case.width, case.height) / 768


def test_florence_dense_captions_and_grounding_in_pixels(florence, monkeypatch: pytest.MonkeyPatch) -> None:
    _florence_oracle(monkeypatch, florence)
    regions = florence.dense_region_captions([c.image for c in CASES])
    for case, found in zip(CASES, regions, strict=True):
        assert [r.text for r in found] == ["cat"], case.name
        np.testing.assert_allclose(found[0].box, case.box, atol=_florence_tolerance(case), err_msg=case.name)
    for case in CASES:
        grounded = florence.phrase_grounding(case.image, "a cat")
        assert [r.text for r in grounded] == ["a cat"]
        np.testing.assert_allclose(grounded[0].box, case.box, atol=_florence_tolerance(case), err_msg=case.name)


def test_florence_region_description_reads_the_prompted_region(florence, monkeypatch) -> None:
    _florence_oracle(monkeypatch, florence)
    for w, h in [(301, 199), (45, 37), (1501, 1123)]:
        image = bright_image(w, h, (0, 0, w // 2, h), COLOURS["red"])
        image[:, w // 2 :] = COLOURS["blue"]
        boxes = [(w * 0.1, h * 0.2, w * 0.4, h * 0.9), (w * 0.6, h * 0.1, w * 0.95, h * 0.5), (0, 0, w * 0.45, h)]
        assert florence.region_description(image, boxes) == ["red", "blue", "red"], (w, h)


# --- LLM backends -------------------------------------------------------------------------------------------------


def _bigram_llama(source: Path, dest: Path, reply: str) -> None:
    """A tiny Llama-style decoder (Llama, Qwen3) rewired so that it always answers ``reply``: attention and MLP outputs are zeroed, so the last
    hidden state is the current token's (normalised) embedding, and the output layer maps each token of the chain
    prompt-end -> reply tokens -> EOS to its successor. Whatever the prompt, greedy decoding writes ``reply``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    rendered = tok.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True, tokenize=False)
    prompt_end = tok.encode(rendered, add_special_tokens=False)[-1]
    chain = [prompt_end, *tok.encode(reply, add_special_tokens=False), tok.eos_token_id]
    assert len(set(chain)) == len(chain), "the chain needs distinct tokens"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        emb = model.model.embed_tokens.weight
        unit = emb / emb.norm(dim=-1, keepdim=True)
        model.lm_head.weight.zero_()
        for current, following in zip(chain, chain[1:], strict=False):
            model.lm_head.weight[following] += 20.0 * unit[current]
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


@pytest.mark.parametrize("name", ["llama", "qwen3"])
def test_llm_transformers_backend_answers_by_construction(tiny_dir: Path, tmp_path: Path, name: str) -> None:
    _bigram_llama(tiny_dir / name, tmp_path / "bigram", "the cat sleeps")
    llm = load_adapter(ModelSpec(id=str(tmp_path / "bigram"), family="llm", dtype="float32"))
    conversations = [
        [{"role": "user", "content": "Describe the scene."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer request " * 9}],
    ]
    greedy = llm.chat(conversations, max_new_tokens=16, temperature=0.0, top_p=1.0, seed=0)
    assert [(c.text, c.finish_reason) for c in greedy] == [("the cat sleeps", "stop")] * 2
    sampled = llm.chat(conversations, max_new_tokens=16, temperature=0.7, top_p=0.95, seed=[1, 2])
    assert [c.text for c in sampled] == ["the cat sleeps"] * 2  # the margins leave sampling no other choice
    cut = llm.chat(conversations[:1], max_new_tokens=2, temperature=0.0, top_p=1.0, seed=0)[0]
    assert cut.finish_reason == "length" and "the cat sleeps".startswith(cut.text) and cut.text != "the cat sleeps"


def test_siglip2_label_assignment_by_colour(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same oracle on the transformers SigLIP 2 (family ``hf_clip``): its processor normalises with mean/std 0.5
    and pads texts to 64 tokens."""
    clip = load_adapter(ModelSpec(id=str(tiny_dir / "siglip2"), family="hf_clip"))
    dim = 32
    axes = {}
    for k, colour in enumerate(COLOURS):
        tokens = clip.processor.tokenizer([colour], padding="max_length", max_length=clip.text_length)
        axes[tuple(tokens["input_ids"][0])] = k

    def get_image_features(pixel_values, **_):
        rgb = (pixel_values.float() * 0.5 + 0.5).mean(dim=(2, 3))
        out = torch.zeros(len(pixel_values), dim)
        out[:, :3] = rgb
        return out

    def get_text_features(input_ids, **_):
        out = torch.zeros(len(input_ids), dim)
        for row, t in enumerate(input_ids.tolist()):
            out[row, axes.get(tuple(t), 3)] = 1.0
        return out

    monkeypatch.setattr(clip.model, "get_image_features", get_image_features)
    monkeypatch.setattr(clip.model, "get_text_features", get_text_features)
    _assert_colour_labels(clip)


# --- SAM 2 box prompts (transformers) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "sam2"), family="sam2"))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sam2_box_prompts_give_the_box_back_as_a_mask(sam2, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oracle mask decoder is HIGH inside each prompt box as the processor hands it over (in the stretched
    1024x1024 frame) on SAM 2's 256x256 low-resolution grid."""
    from grand_engine.io import rle

    def forward(image_embeddings, input_boxes, multimask_output=False, **_):
        boxes = input_boxes[0]
        grid = (torch.arange(256, dtype=torch.float32) + 0.5) * 4
        logits = torch.full((1, len(boxes), 1, 256, 256), LOW)
        for k, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
            inside = ((grid >= y1) & (grid < y2))[:, None] & ((grid >= x1) & (grid < x2))[None, :]
            logits[0, k, 0][inside] = HIGH
        return SimpleNamespace(pred_masks=logits, iou_scores=torch.full((1, len(boxes), 1), 0.8))

    monkeypatch.setattr(sam2.model, "forward", forward)
    h, w = case.height, case.width
    prompts = [case.box, (0, 0, max(2, w // 5), max(2, h // 4)), case.box]
    masks, scores = sam2.segment_boxes_with_scores(case.image, prompts, max_boxes_per_call=2)
    assert scores.tolist() == pytest.approx([0.8, 0.8, 0.8])
    for prompt, mask in zip(prompts, masks, strict=True):
        assert mask["size"] == [h, w]
        decoded = rle.decode(mask)
        np.testing.assert_allclose(mask_box(decoded), prompt, atol=1.0 + max(h / 256, w / 256))
        x1, y1, x2, y2 = prompt
        assert decoded[y1:y2, x1:x2].mean() > 0.9


# --- SAM 3 text prompts -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam3(tiny_dir: Path):
    return load_adapter(ModelSpec(id=str(tiny_dir / "sam3"), family="sam3"))


def test_sam3_boxes_and_query_labels(sam3, monkeypatch: pytest.MonkeyPatch) -> None:
    """Query 0 of the prompt "a cat" is the white rectangle (xyxy, normalised over the stretched 1008x1008 input)
    with HIGH logit and presence; every other prompt's queries and presence are LOW."""
    model = sam3.model
    target = sam3.text_features(["a cat"])[0][0]
    seen: dict[str, torch.Tensor] = {}
    real_vision = model.get_vision_features

    def get_vision_features(pixel_values, **kwargs):
        seen["pixels"] = pixel_values
        return real_vision(pixel_values=pixel_values, **kwargs)

    def forward(vision_embeds, text_embeds, attention_mask=None, **_):
        prompts = text_embeds.pooler_output
        n, queries = len(prompts), model.config.detr_decoder_config.num_queries
        cx, cy, bw, bh = bright_box_in_input(seen["pixels"][0, 0].float().numpy())
        logits = torch.full((n, queries), LOW)
        presence = torch.full((n, 1), LOW)
        boxes = torch.tensor([0.1, 0.1, 0.2, 0.2]).repeat(n, queries, 1)
        for row in range(n):
            if torch.allclose(prompts[row], target):
                logits[row, 0], presence[row, 0] = HIGH, HIGH
                boxes[row, 0] = torch.tensor([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        return SimpleNamespace(pred_logits=logits, pred_boxes=boxes, presence_logits=presence, pred_masks=None)

    monkeypatch.setattr(model, "get_vision_features", get_vision_features)
    monkeypatch.setattr(model, "forward", forward)
    sam3.batch_size = 2  # three prompts: two decoder batches
    found = sam3.detect([c.image for c in CASES], [["a dog", "trees", "a cat"]] * len(CASES), threshold=0.5)
    for case, det in zip(CASES, found, strict=True):
        assert det.labels == ["a cat"] and det.label_ids.tolist() == [2], case.name
        assert det.scores[0] == pytest.approx((1 / (1 + np.exp(-HIGH))) ** 2, rel=1e-4)
        assert_box(det.boxes[0], case, (1008, 1008))
    sam3.set_vocabulary(["a cat", "a dog"])
    vocab = sam3.detect_vocabulary([CASES[0].image], threshold=0.5)[0]
    assert vocab.labels == ["a cat"] and vocab.label_ids.tolist() == [0]


def test_qwen_vl_pixel_budget_sets_the_visual_tokens(tiny_dir: Path) -> None:
    """``max_pixels`` caps the resized area: a 1501x1123 image at 200,704 pixels (196 merged 32-px tokens) becomes
    a grid of 2x2-merged 16-px patches whose area is at most the budget; without the option the real budget
    (16,777,216 pixels) keeps the image near its own size."""
    capped = load_adapter(ModelSpec(id=str(tiny_dir / "qwen3-vl"), family="vlm", options={"max_pixels": 200_704}))
    image = CASES[2].image
    grid = capped.processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert grid[0] == 1 and grid[1] * grid[2] * 16 * 16 <= 200_704 and grid[1] % 2 == grid[2] % 2 == 0
    assert abs(grid[2] / grid[1] - 1501 / 1123) < 0.1  # aspect kept
    full = load_adapter(ModelSpec(id=str(tiny_dir / "qwen3-vl"), family="vlm"))
    grid = full.processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert (grid[1] * 16, grid[2] * 16) == (1120, 1504)  # the nearest multiples of 32
    with pytest.raises(ValueError, match="native-resolution"):
        load_adapter(ModelSpec(id=str(tiny_dir / "llava"), family="vlm", options={"max_pixels": 1000}))


def test_florence_grounds_caption_spans_for_the_grounder_slot(florence, monkeypatch: pytest.MonkeyPatch) -> None:
    """Florence-2 in the ``ground_phrases`` slot: each span takes the box of the phrase that names it."""
    from grand_engine.models.vlm import same_phrase

    _florence_oracle(monkeypatch, florence)
    for case in CASES:
        dog, cat, empty = florence.ground_phrases(case.image, "dog and a cat", [(0, 3), (8, 13), (3, 4)])
        assert dog is None and empty is None
        box, score = cat
        assert score == 1.0
        np.testing.assert_allclose(box, case.box, atol=_florence_tolerance(case), err_msg=case.name)
    assert same_phrase("A red car.", "the red car") and same_phrase("cat", "a cat")
    assert not same_phrase("a car", "a red car") and not same_phrase("", "the")


def test_llm_chat_template_kwargs_reach_the_template(tiny_dir: Path) -> None:
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
        "{% endif %}"
    )
    conversation = [{"role": "user", "content": "Hi"}]
    plain = load_adapter(ModelSpec(id=str(tiny_dir / "qwen3"), family="llm", options={"chat_template": template}))
    quiet = load_adapter(
        ModelSpec(
            id=str(tiny_dir / "qwen3"),
            family="llm",
            options={"chat_template": template, "chat_template_kwargs": {"enable_thinking": False}},
        )
    )
    assert plain.prompt_text(conversation).endswith("<|im_start|>assistant\n")
    assert quiet.prompt_text(conversation).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
