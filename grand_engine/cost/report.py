"""The cost of a whole manifest: per-role table, the pipeline's floor in images/s per GPU, a co-residency plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from grand_engine.cost.estimate import RoleCost
from grand_engine.cost.gpus import GpuSpec
from grand_engine.cost.workload import ASSUMPTIONS, Workload

USABLE_MEMORY = 0.9
"""Share of a card's memory the plan fills with weights and KV caches (the rest: CUDA context, activations)."""


@dataclass
class Placement:
    """Model groups (one copy of a checkpoint plus its stages' KV caches) packed onto cards."""

    cards: list[list[tuple[str, float, float]]]  # per card: (checkpoint, GB, seconds per image)

    @property
    def busiest_seconds(self) -> float:
        return max((sum(s for _, _, s in card) for card in self.cards), default=0.0)

    def images_per_s_per_gpu(self) -> float:
        """One copy of each group, no replication: the busiest card bounds the pipeline."""
        busy = self.busiest_seconds
        return 1.0 / busy / len(self.cards) if busy > 0 else math.inf


@dataclass
class CostReport:
    manifest: str
    gpu: GpuSpec
    mfu: float
    mbu: float
    workload: Workload
    roles: list[RoleCost]
    card_gb: float = 80.0
    notes: list[str] = field(default_factory=list)

    # -- totals -----------------------------------------------------------------------------------------------

    @property
    def gpu_roles(self) -> list[RoleCost]:
        return [r for r in self.roles if r.gpu and r.error is None]

    @property
    def flops_per_image(self) -> float:
        return sum(r.flops_per_image for r in self.gpu_roles)

    def seconds_per_image(self, mfu: float = 1.0, mbu: float = 1.0) -> float:
        return sum(r.seconds_per_image(self.gpu, mfu, mbu) for r in self.gpu_roles)

    def images_per_s(self, mfu: float = 1.0, mbu: float = 1.0) -> float:
        s = self.seconds_per_image(mfu, mbu)
        return 1.0 / s if s > 0 else math.inf

    def gpu_hours_per_million(self, mfu: float = 1.0, mbu: float = 1.0) -> float:
        return self.seconds_per_image(mfu, mbu) * 1e6 / 3600

    # -- memory -----------------------------------------------------------------------------------------------

    def groups(self) -> dict[str, tuple[float, float, list[str]]]:
        """Per checkpoint (and dtype): GB of one weight copy + the largest KV cache of its stages (one engine
        serves them all), seconds per image, stages."""
        out: dict[str, tuple[float, float, float, list[str]]] = {}
        for r in self.gpu_roles:
            name = f"{r.model_id} ({r.dtype})"
            w, kv, s, stages = out.get(name, (r.weight_gb, 0.0, 0.0, []))
            s += r.seconds_per_image(self.gpu, self.mfu, self.mbu)
            out[name] = (w, max(kv, r.kv_cache_gb), s, [*stages, r.name])
        return {n: (w + kv, s, stages) for n, (w, kv, s, stages) in out.items()}

    def per_stage_gb(self) -> float:
        """Memory when every stage holds its own copy of its models (the engine today: one actor per stage)."""
        return sum(r.weight_gb + r.kv_cache_gb for r in self.gpu_roles)

    def shared_gb(self) -> float:
        """Memory when the stages of one checkpoint share one copy."""
        return sum(gb for gb, _, _ in self.groups().values())

    def placement(self) -> Placement:
        """First-fit-decreasing packing of the checkpoint groups onto cards of ``card_gb``."""
        usable = self.card_gb * USABLE_MEMORY
        cards: list[list[tuple[str, float, float]]] = []
        for name, (gb, s, _) in sorted(self.groups().items(), key=lambda kv: -kv[1][0]):
            for card in cards:
                if sum(g for _, g, _ in card) + gb <= usable:
                    card.append((name, gb, s))
                    break
            else:
                cards.append([(name, gb, s)])
        return Placement(cards)

    # -- output -----------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        plan = self.placement()
        return {
            "manifest": self.manifest,
            "gpu": {
                "key": self.gpu.key,
                "name": self.gpu.name,
                "dense_bf16_tflops": self.gpu.tflops,
                "hbm_gb_s": self.gpu.hbm_gb_s,
                "memory_gb": self.gpu.memory_gb,
                "source": self.gpu.source,
            },
            "mfu": self.mfu,
            "mbu": self.mbu,
            "assumptions": {
                k: {"value": self.workload[k], "source": a.source, "overridden": k in self.workload.overridden}
                for k, a in ASSUMPTIONS.items()
            },
            "prompt_tokens": {k: {"value": v, "source": s} for k, (v, s) in self.workload.prompts.items()},
            "roles": [r.to_dict(self.gpu, self.mfu, self.mbu) for r in self.roles],
            "pipeline": {
                "tflops_per_image": self.flops_per_image / 1e12,
                "floor_images_per_s_per_gpu": self.images_per_s(),
                "images_per_s_per_gpu_at_utilisation": self.images_per_s(self.mfu, self.mbu),
                "gpu_hours_per_million_images_floor": self.gpu_hours_per_million(),
                "gpu_hours_per_million_images_at_utilisation": self.gpu_hours_per_million(self.mfu, self.mbu),
            },
            "memory_plan": {
                "card_gb": self.card_gb,
                "usable_share": USABLE_MEMORY,
                "one_copy_per_stage_gb": self.per_stage_gb(),
                "one_copy_per_checkpoint_gb": self.shared_gb(),
                "cards": [[{"checkpoint": n, "gb": g, "s_per_image": s} for n, g, s in card] for card in plan.cards],
                "images_per_s_per_gpu_without_replication": plan.images_per_s_per_gpu(),
            },
            "notes": self.notes,
        }

    def format(self) -> str:
        g = self.gpu
        u = f"{self.mfu:.0%}"
        lines = [
            f"cost model: manifest {self.manifest} on {g.name} ({g.tflops:,.0f} dense BF16 TFLOP/s, "
            f"{g.hbm_gb_s:,.0f} GB/s HBM, {g.memory_gb:.0f} GB); utilisation {u} of FLOPs, "
            f"{self.mbu:.0%} of HBM bandwidth",
            "Floors from the models' configurations on the meta device (no weights): FLOPs counted by "
            "FlopCounterMode, decode steps bound by HBM bandwidth.",
            "",
            f"{'stage.slot':<26} {'model':<44} {'params':>8} {'GB':>6} {'GFLOPs/img':>11} "
            f"{'ms @100%':>9} {'ms @' + u:>9}",
        ]
        for r in self.roles:
            if r.error:
                continue
            ms, ms_u = r.seconds_per_image(g) * 1e3, r.seconds_per_image(g, self.mfu, self.mbu) * 1e3
            cpu = "" if r.gpu else "  (CPU stage: not in the GPU total)"
            lines.append(
                f"{r.name:<26} {_short(r.model_id, 44):<44} {_count(r.params):>8} {r.weight_gb:>6.2f} "
                f"{r.flops_per_image / 1e9:>11,.1f} {ms:>9.2f} {ms_u:>9.2f}{cpu}"
            )
        errors = [r for r in self.roles if r.error]
        if errors:
            lines += ["", "not costed:"]
            lines += [f"  {r.name} ({r.model_id}): {r.error}" for r in errors]
        lines += [
            "",
            f"pipeline (GPU stages): {self.flops_per_image / 1e12:,.2f} TFLOPs per image; floor "
            f"{self.images_per_s():.2f} images/s per GPU at 100 %, {self.images_per_s(self.mfu, self.mbu):.2f} at {u} "
            f"MFU ({self.gpu_hours_per_million(self.mfu, self.mbu):,.0f} GPU-hours per million images)",
        ]
        plan = self.placement()
        usable = self.card_gb * USABLE_MEMORY
        if not plan.cards:
            lines.append("no costed stage of this manifest asks for a GPU: the figures above are per role only")
        lines.append(
            f"memory on {self.card_gb:.0f} GB cards (using {usable:.0f} GB): one copy per stage "
            f"{self.per_stage_gb():.1f} GB, one copy per checkpoint {self.shared_gb():.1f} GB "
            f"(weights + KV caches at each role's batch)"
        )
        if not plan.cards:
            pass
        elif len(plan.cards) == 1:
            lines.append("  every checkpoint fits on one card: the floor above is the co-resident pipeline's")
        else:
            lines.append(
                f"  needs {len(plan.cards)} cards with one copy of each checkpoint; without replication the busiest "
                f"card bounds it at {plan.images_per_s_per_gpu():.2f} images/s per GPU at {u} MFU"
            )
            for k, card in enumerate(plan.cards, 1):
                desc = ", ".join(f"{_short(n, 40)} {gb:.1f} GB" for n, gb, _ in card)
                lines.append(f"  card {k}: {desc}")
        lines += ["", "calls per image:"]
        for r in self.roles:
            for c in r.calls:
                size = f" {c.input_size[0]}x{c.input_size[1]}" if c.input_size else ""
                gen = ""
                if c.call.kind == "generate":
                    gen = (
                        f", {c.image_tokens} image + {c.call.prompt_tokens} prompt tokens"
                        f"{f' ({c.call.shared_tokens} shared)' if c.call.shared_tokens else ''}, "
                        f"{c.call.new_tokens} new, batch {c.batch}"
                    )
                lines.append(
                    f"  {r.name:<26} {c.call.per_image:>7.2f} × {c.call.what}{size}{gen}: "
                    f"{c.total_flops / 1e9:,.1f} GFLOPs"
                )
        for r in self.roles:
            for note in r.notes:
                lines.append(f"  note {r.name}: {note}")
        lines += ["", "assumptions (change with --assume NAME=VALUE):"]
        for k, a in ASSUMPTIONS.items():
            mark = " (overridden)" if k in self.workload.overridden else ""
            lines.append(f"  {k} = {self.workload[k]:g}{mark}: {a.source}")
        for k, (v, s) in self.workload.prompts.items():
            lines.append(f"  {k} = {v}: {s}")
        lines += [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]
