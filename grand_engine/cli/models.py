"""``grand-engine models``: tiny checkpoints, checkpoint checks and the acceptance smoke test."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from grand_engine.cli.common import parse_vars
from grand_engine.config import ConfigError, load_manifest


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``models tiny``, ``models check`` and ``models smoke``."""
    p_models = sub.add_parser("models", help="tiny checkpoints and checkpoint checks")
    msub = p_models.add_subparsers(dest="models_command", required=True)
    p_tiny = msub.add_parser("tiny", help="build tiny random-initialised checkpoints of every model family")
    p_tiny.add_argument("dir", nargs="?", default=None, help="destination (default: GRAND_TINY_DIR or ~/.cache/…)")
    p_tiny.add_argument("--force", action="store_true", help="rebuild existing checkpoints")
    p_tiny.set_defaults(func=cmd_models)
    p_check = msub.add_parser("check", help="resolve every checkpoint of a manifest without loading weights")
    p_check.add_argument("--manifest", default="tiny")
    p_check.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE")
    p_check.set_defaults(func=cmd_models)
    p_cost = msub.add_parser(
        "cost",
        help="the physical limit of a manifest: FLOPs, weights and floor ms per image of every model role",
        description="Build every model of a manifest from its shipped configuration on the meta device (no "
        "weights, no hub), count its FLOPs per image at the manifest's input sizes, and print each role's floor "
        "and the pipeline's images/s per GPU. Exit status 1 when a model role could not be costed.",
    )
    p_cost.add_argument("--manifest", default="grand", help="packaged manifest name or YAML path (default grand)")
    p_cost.add_argument("--gpu", default="h100", choices=["h100", "h200", "a100", "l4"])
    p_cost.add_argument("--json", default=None, metavar="FILE", help="also write every figure as JSON")
    p_cost.add_argument("--mfu", type=float, default=0.4, help="model-FLOPs utilisation of the projection (0.4)")
    p_cost.add_argument("--mbu", type=float, default=0.8, help="HBM-bandwidth utilisation of decoding (0.8)")
    p_cost.add_argument("--card-gb", type=float, default=None, help="card memory for the plan (default 80 or less)")
    p_cost.add_argument("--levels", default=None, help="only the stages of these levels, e.g. 1-4")
    p_cost.add_argument(
        "--assume", action="append", default=[], metavar="NAME=VALUE", help="change a workload assumption"
    )
    p_cost.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE")
    p_cost.add_argument(
        "--candidates", action="store_true", help="also cost the 2026 candidates in the roles each could play"
    )
    p_cost.set_defaults(func=cmd_cost)
    p_smoke = msub.add_parser(
        "smoke",
        help="load every model of a manifest once and check known answers on bundled photos (acceptance test)",
    )
    p_smoke.add_argument("--manifest", default="tiny")
    p_smoke.add_argument("--var", dest="variables", action="append", default=[], metavar="NAME=VALUE")
    p_smoke.add_argument("--images", default=None, help="a folder of your own photos for the throughput runs")
    p_smoke.add_argument(
        "--only", action="append", default=[], metavar="STAGE[.SLOT]", help="smoke-test only these roles"
    )
    p_smoke.set_defaults(func=cmd_smoke)


def cmd_models(args: argparse.Namespace) -> int:
    if args.models_command == "tiny":
        from grand_engine.models import tiny  # deferred: the builders import numpy and the model layer

        dest = Path(args.dir).expanduser() if args.dir else tiny.default_tiny_dir()
        print(tiny.format_reports(tiny.build_all(dest, force=args.force)))
        return 0
    from grand_engine.models.check import check_manifest, format_checks  # deferred: imports the model layer

    manifest = load_manifest(args.manifest, variables=parse_vars(args.variables))
    checks = check_manifest(manifest)
    print(format_checks(checks))
    return 0 if all(c.result.found for c in checks) else 1


def cmd_smoke(args: argparse.Namespace) -> int:
    # the model layer (torch, transformers) is imported only when the command runs
    from grand_engine.models.smoke import folder_images, format_smoke, run_smoke, smoke_failed

    manifest = load_manifest(args.manifest, variables=parse_vars(args.variables))
    images = folder_images(Path(args.images)) if args.images else None
    results = run_smoke(manifest, images=images, only=args.only)
    print(format_smoke(results))
    return 1 if smoke_failed(results) else 0


def cmd_cost(args: argparse.Namespace) -> int:
    # the cost model (torch, transformers, open_clip) is imported only when the command runs
    from grand_engine.cost import cost_manifest
    from grand_engine.cost.candidates import cost_candidates
    from grand_engine.runtime.pipeline import parse_levels

    try:
        assume = {k: float(v) for k, v in parse_vars(args.assume).items()}
    except ValueError as exc:
        raise ConfigError(f"--assume expects NAME=NUMBER: {exc}") from None
    kwargs = {"gpu_key": args.gpu, "mfu": args.mfu, "mbu": args.mbu, "assume": assume}
    try:
        report = cost_manifest(
            args.manifest,
            variables=parse_vars(args.variables),
            levels=parse_levels(args.levels) if args.levels else None,
            card_gb=args.card_gb,
            **kwargs,
        )
    except ValueError as exc:  # an unknown assumption or GPU
        raise ConfigError(str(exc)) from None
    print(report.format())
    data = {"manifest": report.to_dict()}
    if args.candidates:
        candidates = cost_candidates(baseline=args.manifest, **kwargs)
        print("\n" + candidates.format())
        data["candidates"] = candidates.to_dict()
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any(r.failed for r in report.roles) else 0
