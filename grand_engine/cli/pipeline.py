"""``grand-engine run``, ``rerun``, ``status``, ``errors`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grand_engine.cli import add_verbosity_options
from grand_engine.cli.common import EXAMPLES, parse_vars
from grand_engine.config import ConfigError, load_manifest

if TYPE_CHECKING:
    from grand_engine.cli.console import Console
    from grand_engine.runtime.run import RunSummary


def _add_run_options(p: argparse.ArgumentParser, rerun: bool = False) -> None:
    if not rerun:
        p.add_argument("--shards", nargs="+", required=True, help="SA-1B .tar files, folders of tars/images, or globs")
        p.add_argument("--out", required=True, help="output folder (or s3://bucket/prefix)")
        p.add_argument("--manifest", default="tiny", help="packaged manifest name (tiny, grand) or a YAML path")
        sel = p.add_mutually_exclusive_group()
        sel.add_argument("--levels", help="levels to produce with all their ancestors: 1-4, 2, 1-3, …")
        sel.add_argument("--stages", help="comma-separated stage names to run (with their ancestors)")
        p.add_argument("--unit-size", type=int, default=None, help="images per work unit (default: manifest, 128)")
        p.add_argument(
            "--input",
            default=None,
            help="input kind: images (SA-1B tars or image folders; the default) or one a plugin adds; "
            "default: the manifest's `input`",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="STAGE.PARAM=VALUE",
            help="override a stage parameter, or STAGE.resources.FIELD=VALUE (repeatable)",
        )
        p.add_argument(
            "--var",
            dest="variables",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="set a manifest variable such as tiny_dir (repeatable)",
        )
    else:
        p.add_argument("--shards", nargs="+", default=None, help="limit the rerun to these shards (default: all)")
    p.add_argument("--max-units", type=int, default=None, help="process at most N units (trial runs)")
    p.add_argument("--backend", choices=["ray", "inline"], default="ray", help="ray (default) or inline (one process)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over the output's lock even if another driver seems to hold it (only when that driver is gone)",
    )
    p.add_argument("--no-progress", action="store_true", help="no live progress display")
    add_verbosity_options(p, sub=True)


@dataclass
class RunCommand:
    """What ``run`` (and ``rerun``, which repeats the recorded one) asks for; recorded in ``run.json``."""

    manifest: str
    shards: list[str]
    overrides: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    levels: str | None = None
    stages: str | None = None
    input: str | None = None

    def record(self) -> dict[str, Any]:
        return {"cli": asdict(self)}


def _execute(
    args: argparse.Namespace,
    command: RunCommand,
    out: str,
    unit_size: int | None,
    console: Console,
    rerun_stage: str | None = None,
) -> RunSummary:
    """Run ``command`` through the driver (:func:`grand_engine.runtime.run.run`), reporting on ``console``."""
    from grand_engine.runtime.pipeline import parse_levels  # deferred: the driver imports pyarrow and the stages
    from grand_engine.runtime.run import run

    manifest = load_manifest(command.manifest, overrides=command.overrides, variables=command.variables)
    if command.input:
        manifest = manifest.model_copy(update={"input": command.input})
    _, summary = run(
        manifest,
        command.shards,
        out,
        levels=parse_levels(command.levels) if command.levels else None,
        stages=[s.strip() for s in command.stages.split(",") if s.strip()] if command.stages else None,
        unit_size=unit_size,
        max_units=args.max_units,
        backend=args.backend,
        address=args.address,
        force_unlock=getattr(args, "force_unlock", False),
        rerun_stage=rerun_stage,
        run_info=command.record(),
        observer=console.report(),
    )
    return summary


def _run_and_report(args: argparse.Namespace, command: RunCommand, out: str, unit_size: int | None, **kw) -> int:
    """``run`` and ``rerun``: the run on the console of :func:`~grand_engine.cli.console.run_console`, then where
    everything is; exit 1 when a unit failed."""
    from grand_engine.cli.console import locations, run_console  # deferred: imports the driver

    with run_console(out, args.verbose, args.quiet, progress=not args.no_progress) as console:
        summary = _execute(args, command, out, unit_size, console, **kw)
        for line in locations(out, summary, console.log_path, None):
            console.summary(line)
    return 0 if summary.ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    command = RunCommand(
        manifest=args.manifest,
        shards=args.shards,
        overrides=args.overrides,
        variables=parse_vars(args.variables),
        levels=args.levels,
        stages=args.stages,
        input=args.input,
    )
    return _run_and_report(args, command, args.out, args.unit_size)


def cmd_rerun(args: argparse.Namespace) -> int:
    from grand_engine.io.store import OutputStore  # deferred: imports pyarrow

    store = OutputStore(args.out)
    try:
        info = json.loads(store.read_text("run.json"))
    except FileNotFoundError:
        raise ConfigError(f"{args.out} has no run.json; run `grand-engine run` first") from None
    cli = info.get("cli") or {}
    if not cli:
        raise ConfigError(f"{args.out}/run.json does not record the command line; use `grand-engine run` instead")
    command = RunCommand(**{k: v for k, v in cli.items() if k in RunCommand.__dataclass_fields__})
    if args.shards:
        command.shards = args.shards
    return _run_and_report(args, command, args.out, info.get("unit_size"), rerun_stage=args.stage)


def cmd_status(args: argparse.Namespace) -> int:
    from grand_engine.runtime.run import format_status, status  # deferred: the driver imports pyarrow and the runtime

    run_info, rows = status(args.out)
    if args.json:
        print(json.dumps({"units": run_info.get("units"), "stages": [asdict(r) for r in rows]}, indent=2))
    else:
        print(format_status(run_info, rows))
    return 0


def cmd_errors(args: argparse.Namespace) -> int:
    # deferred: pyarrow and the runtime load only when the command runs
    import pyarrow as pa

    from grand_engine.io.store import OutputStore
    from grand_engine.runtime.manifests import ERRORS

    store = OutputStore(args.out)
    base = f"{ERRORS}/{args.stage}" if args.stage else ERRORS
    tables = [store.read_table(rel) for rel in store.list_files(base, ".parquet")]
    if not tables:
        print("no error rows")
        return 0
    table = pa.concat_tables(tables)
    print(f"{table.num_rows} error rows")
    for row in table.slice(0, args.limit).to_pylist():
        print(
            f"{row['stage']:<16} {row['unit_id']:<20} {row['image_id']:<24} {row['error_type']:<22} {row['message']}"
        )
    if table.num_rows > args.limit:
        print(f"… {table.num_rows - args.limit} more (use --limit)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the sample shard (and the tiny checkpoints) on first use, run every stage on it, build the explorer, then
    (unless ``--skip-sources``) build GranD-f from the tiny OpenPSG, RefCOCOg and Flickr30K fixtures, and print where
    everything is. The libraries' output while building goes to the run's log like the run's own."""
    # deferred: the console imports the driver, the demo builder numpy, Pillow and scikit-image
    from grand_engine.cli.console import locations, run_console
    from grand_engine.demo import build_demo_shard

    root = Path(args.out).resolve()
    out = root / "output"
    shard_dir = root / "shards"
    shard = shard_dir / "sa_000000.tar"
    out.mkdir(parents=True, exist_ok=True)
    with run_console(str(out), args.verbose, args.quiet, progress=not args.no_progress) as console:
        if not shard.exists():
            shard_dir.mkdir(parents=True, exist_ok=True)
            build_demo_shard(shard_dir)
            console.say(f"built the sample shard {shard}")
        variables = {}
        tiny_dir = _ensure_tiny_checkpoints(console)
        if tiny_dir is not None:
            variables["tiny_dir"] = str(tiny_dir)
        ns = argparse.Namespace(max_units=None, backend=args.backend, address=None)
        command = RunCommand(manifest="tiny", shards=[str(shard_dir)], variables=variables, levels=args.levels)
        summary = _execute(ns, command, str(out), None, console)
        explorer = _build_explorer(out, root / "explorer")
        for line in locations(str(out), summary, console.log_path, explorer):
            console.summary(line)
        sources_ok = True
        if not args.skip_sources:
            from grand_engine.demo_sources import run_demo  # deferred: it imports the exports and the model layer

            console.say("GranD-f from open datasets: the OpenPSG, RefCOCOg and Flickr30K fixtures through the LLM")
            report = run_demo(root / "sources", backend="inline", variables=variables)
            console.summary(report.summary())
            sources_ok = report.ok
    return 0 if summary.ok and sources_ok else 1


def _build_explorer(out: Path, dest: Path) -> str | None:
    """Write the explorer of the demo output; the ``file://`` address of its index page (None when no level table
    was completed)."""
    # deferred: the explorer and the reader import numpy, pyarrow and Pillow
    from grand_engine.explore.site import build_site
    from grand_engine.grandf.reader import MissingStageError

    try:
        return build_site(out, dest).index.as_uri()
    except MissingStageError as exc:
        logging.getLogger(__name__).warning("no explorer: %s", exc)
        return None


def _ensure_tiny_checkpoints(console: Console) -> Path | None:
    """Build the tiny checkpoints on first use (idempotent); ``None`` when the model layer has none."""
    from grand_engine.models import tiny  # deferred: the builders import numpy and the model layer

    if not hasattr(tiny, "build_all"):
        return None
    dest = tiny.default_tiny_dir()
    reports = tiny.build_all(dest)
    built = [r for r in reports if r.built]
    if built:
        console.say(f"built {len(built)} tiny checkpoints in {dest}")
    return dest


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``run``, ``status``, ``rerun``, ``errors`` and ``demo``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p_run = sub.add_parser(
        "run", help="run the pipeline (skips work already done)", epilog=EXAMPLES, formatter_class=fmt
    )
    _add_run_options(p_run)
    p_run.set_defaults(func=cmd_run)

    p_status = sub.add_parser("status", help="per-stage progress of an output folder, from its manifests")
    p_status.add_argument("out")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    p_status.set_defaults(func=cmd_status)

    p_rerun = sub.add_parser("rerun", help="invalidate a stage and its descendants, then run again")
    p_rerun.add_argument("out")
    p_rerun.add_argument("--stage", required=True)
    _add_run_options(p_rerun, rerun=True)
    p_rerun.set_defaults(func=cmd_rerun)

    p_err = sub.add_parser("errors", help="list per-image error rows")
    p_err.add_argument("out")
    p_err.add_argument("--stage", default=None)
    p_err.add_argument("--limit", type=int, default=50)
    p_err.set_defaults(func=cmd_errors)

    p_demo = sub.add_parser("demo", help="build the sample shard and run every stage of the tiny manifest on it")
    p_demo.add_argument("--out", default="demo_out", help="demo folder (default: ./demo_out)")
    p_demo.add_argument("--backend", choices=["ray", "inline"], default="ray")
    p_demo.add_argument("--levels", default=None, help="levels to run (default: every stage of the manifest)")
    p_demo.add_argument("--no-progress", action="store_true", help="no live progress display")
    p_demo.add_argument(
        "--skip-sources",
        action="store_true",
        help="skip the GranD-f construction from the OpenPSG, RefCOCOg and Flickr30K fixtures (several minutes)",
    )
    add_verbosity_options(p_demo, sub=True)
    p_demo.set_defaults(func=cmd_demo)
