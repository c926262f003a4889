"""SAM 2 video propagation (family ``sam2_video``): transformers' ``Sam2VideoModel`` + ``Sam2VideoProcessor``.

One adapter serves every SAM 2 / SAM 2.1 checkpoint in the transformers layout (``facebook/sam2.1-hiera-tiny`` …
``-large``, or a local folder). Two operations:

* :meth:`Sam2Video.propagate` — masks given on some frames of some objects (conditioning frames) are tracked over
  every frame of the clip: one inference session per first conditioning frame, a forward pass from that frame to
  the end and a backward pass from it to the start. The conditioning frames keep their given masks.
* :meth:`Sam2Video.segment_points` — one positive point per candidate object on one frame; returns each object's
  mask and SAM 2's object score logit (above 0: SAM 2 judges the object present).

Frames are ``H×W×3`` uint8 RGB arrays of one size; masks are ``H×W`` bool arrays in frame pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from grand_engine.models.base import Adapter, hf_load_kwargs
from grand_engine.models.imaging import check_images


class Sam2Video(Adapter):
    """transformers SAM 2 video model. ``spec.options``: ``mask_threshold`` (logit threshold of the binarised masks,
    default 0.0 as the processor's)."""

    family = "sam2_video"

    def load(self) -> None:
        # transformers is heavy: imported on first use
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        kwargs = hf_load_kwargs(self.spec)
        self.processor = Sam2VideoProcessor.from_pretrained(self.model_path, **kwargs)
        model = Sam2VideoModel.from_pretrained(self.model_path, dtype=self.dtype, **kwargs)
        self.model = model.to(self.device).eval()
        self.mask_threshold = float(self.spec.options.get("mask_threshold", 0.0))

    # ------------------------------------------------------------------ sessions

    def _session(self, frames: Sequence[np.ndarray]) -> Any:
        # torch is heavy: imported on first use
        import torch

        frames = check_images(frames)
        if not frames:
            raise ValueError("SAM 2 propagation needs at least one frame")
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) != 1:
            raise ValueError(f"the frames of one clip must share one size, got {sorted(sizes)}")
        return self.processor.init_video_session(
            video=frames,
            inference_device=self.device,
            dtype=self.dtype if self.dtype is not None else torch.float32,
        )

    def _masks(self, session: Any, pred_masks: Any) -> np.ndarray:
        """``(objects, H, W)`` bool masks at the frame size from the model's low-resolution logits."""
        size = [[int(session.video_height), int(session.video_width)]]
        out = self.processor.post_process_masks(
            [pred_masks.float()], original_sizes=size, binarize=True, mask_threshold=self.mask_threshold
        )[0]
        return out[:, 0].cpu().numpy().astype(bool)

    # ------------------------------------------------------------------ operations

    def propagate(
        self, frames: Sequence[np.ndarray], prompts: Mapping[int, Mapping[int, np.ndarray]]
    ) -> dict[int, list[np.ndarray]]:
        """Track objects over ``frames``. ``prompts`` maps an object id to ``{frame index: H×W bool mask}`` (its
        conditioning frames). Returns ``{object id: one H×W bool mask per frame}`` (see the module docstring)."""
        if not prompts:
            return {}
        frames = check_images(frames)
        height, width = frames[0].shape[:2] if frames else (0, 0)
        groups: dict[int, list[int]] = {}
        for obj_id, given in prompts.items():
            if not given:
                raise ValueError(f"object {obj_id}: no conditioning frame")
            for frame_idx, mask in given.items():
                if not 0 <= frame_idx < len(frames):
                    raise ValueError(f"object {obj_id}: conditioning frame {frame_idx} is outside the clip")
                if np.shape(mask) != (height, width):
                    raise ValueError(
                        f"object {obj_id}, frame {frame_idx}: mask {np.shape(mask)} != frame {(height, width)}"
                    )
            # transformers tracks an object only from a frame where it already has a conditioning output, so objects
            # whose first conditioning frame differs go into separate sessions
            groups.setdefault(min(given), []).append(obj_id)
        result: dict[int, list[np.ndarray]] = {}
        for start, obj_ids in sorted(groups.items()):
            result.update(self._propagate_group(frames, {o: prompts[o] for o in obj_ids}, start))
        return {obj_id: result[obj_id] for obj_id in prompts}

    def _propagate_group(
        self, frames: list[np.ndarray], prompts: Mapping[int, Mapping[int, np.ndarray]], start: int
    ) -> dict[int, list[np.ndarray]]:
        """Objects whose first conditioning frame is ``start``: forward from it, backward from it to frame 0."""
        # torch is heavy: imported on first use
        import torch

        session = self._session(frames)
        predicted: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            # transformers uses an object's new inputs on the next frame it runs, so each conditioning frame gets
            # all its objects' masks in one call and is run before the next frame's masks are added
            for frame_idx in sorted({f for given in prompts.values() for f in given}):
                obj_ids = [o for o, given in prompts.items() if frame_idx in given]
                masks = [np.asarray(prompts[o][frame_idx], dtype=bool) for o in obj_ids]
                self.processor.add_inputs_to_inference_session(
                    session, frame_idx=int(frame_idx), obj_ids=[int(o) for o in obj_ids], input_masks=masks
                )
                self.model(inference_session=session, frame_idx=int(frame_idx))
            for out in self.model.propagate_in_video_iterator(session, start_frame_idx=start):
                predicted[int(out.frame_idx)] = self._masks(session, out.pred_masks)
            if start > 0:
                for out in self.model.propagate_in_video_iterator(session, start_frame_idx=start, reverse=True):
                    predicted.setdefault(int(out.frame_idx), self._masks(session, out.pred_masks))
        order = [int(i) for i in session.obj_ids]
        result: dict[int, list[np.ndarray]] = {}
        for obj_id, given in prompts.items():
            k = order.index(int(obj_id))
            result[obj_id] = [
                np.asarray(given[i], dtype=bool) if i in given else predicted[i][k] for i in range(len(frames))
            ]
        return result

    def segment_points(
        self, frame: np.ndarray, points: Sequence[Sequence[float]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """One candidate object per ``(x, y)`` pixel point on ``frame``: its mask and its object score logit."""
        # torch is heavy: imported on first use
        import torch

        points = [(float(x), float(y)) for x, y in points]
        if not points:
            return [], np.zeros((0,), np.float32)
        session = self._session([frame])
        ids = list(range(1, len(points) + 1))
        self.processor.add_inputs_to_inference_session(
            session,
            frame_idx=0,
            obj_ids=ids,
            input_points=[[[[x, y]] for x, y in points]],
            input_labels=[[[1] for _ in points]],
        )
        with torch.inference_mode():
            out = self.model(inference_session=session, frame_idx=0)
        masks = self._masks(session, out.pred_masks)
        scores = out.object_score_logits.float().reshape(-1).cpu().numpy().astype(np.float32)
        return [masks[i] for i in range(len(points))], scores
