"""The ``tokzoo`` command line: plugins, list, train, bench, sweep, compare, report, import."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from tokzoo.textsafe import console as escape  # markup and control characters shown as text
from rich.table import Table

from tokzoo import __version__
from tokzoo.cluster import add_cluster_args, cluster_flags_given, cluster_options
from tokzoo.errors import ConfigError, TokzooError, cannot_write

console = Console()
err_console = Console(stderr=True)


def cmd_plugins(args) -> int:
    from tokzoo.registry import get_registry

    reg = get_registry()
    table = Table(title="tokzoo plugins")
    table.add_column("plugin", overflow="fold")
    table.add_column("distribution", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("hooks", overflow="fold")
    table.add_column("status", no_wrap=True)
    for info in reg.plugins.values():
        status = "[green]ok[/]" if info.ok else "[red]failed[/] (below)"
        hooks = ", ".join(h.replace("tokzoo_register_", "") for h in info.hooks)
        table.add_row(*(escape(str(c)) for c in (info.name.removesuffix(".plugin"), info.distribution, info.version,
                                                    hooks)), status)
    console.print(table)
    for info in reg.plugins.values():
        if not info.ok:
            console.print(f"[red]plugin '{escape(info.name)}' ({escape(info.distribution)}) failed to load:[/] "
                          f"{escape(info.error)}",
                          highlight=False, soft_wrap=True)
        for w in info.warnings:
            console.print(f"[yellow]plugin '{escape(info.name)}' ({escape(info.distribution)}):[/] {escape(w)}",
                          highlight=False,
                          soft_wrap=True)
    return 0


def warn_plugins() -> None:
    """One line on stderr per plugin warning (e.g. a misspelled hook name)."""
    from tokzoo.registry import get_registry

    for info in get_registry().plugins.values():
        for w in info.warnings:
            err_console.print(f"[yellow]warning:[/] plugin '{escape(info.name)}' ({escape(info.distribution)}): "
                              f"{escape(w)}",
                              highlight=False, soft_wrap=True)


def cmd_list(args) -> int:
    from tokzoo.config import list_presets
    from tokzoo.registry import KINDS, get_registry

    reg = get_registry()
    kind = args.kind[:-1] if args.kind and args.kind.endswith("s") and args.kind[:-1] in KINDS + ("preset",) else args.kind
    table = Table(title="tokzoo components" if not kind else f"tokzoo {kind}s")
    for col in ("kind", "name", "plugin", "description"):
        table.add_column(col)
    if kind in (None, "preset"):
        owners = {Path(folder).resolve(): dist for _, folder, dist in reg.preset_dirs}
        for name, path in sorted(list_presets().items()):
            owner = next((d for f, d in owners.items() if f in Path(path).resolve().parents), "TOKZOO_CONFIG_PATH")
            table.add_row("preset", escape(name), escape(owner), escape(path.name))
    if kind != "preset":
        for comp in reg.list(kind):
            table.add_row(comp.kind, escape(comp.name), escape(comp.distribution), escape(comp.description or ""))
    console.print(table)
    return 0


def cmd_show(args) -> int:
    import yaml

    from tokzoo.describe import describe, params_of

    comps, preset = describe(args.name, args.kind)
    for comp in comps:
        console.print(f"[bold]{comp.kind} '{escape(comp.name)}'[/] ({escape(comp.distribution)}, plugin "
                      f"'{escape(comp.plugin)}')", highlight=False)
        if comp.description:
            console.print(f"  {escape(comp.description)}", highlight=False)
        rows = params_of(comp)
        if rows:
            table = Table(box=None, pad_edge=False, show_edge=False)
            for col in ("parameter", "type", "default", "help"):
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*(escape(c) for c in row))
            console.print(table)
        else:
            console.print("  (no parameters)" if comp.config is not None else "  (its parameters are not declared)")
        where = {"tokenizer": "model", "dataset": "data", "recipe": "recipe"}.get(comp.kind)  # an encoder: model.encoder={...}
        example = f"{where}.name={comp.name}" if where else (f"metrics.{comp.name}.<parameter>=V (tokzoo bench)"
                                                             if comp.kind == "metric" else
                                                             f"model.{comp.kind}={{name: {comp.name}, ...}}")
        console.print(f"  set it: {escape(example)}", highlight=False)
    if preset is not None:
        from tokzoo.config import list_presets

        console.print(f"[bold]preset '{escape(args.name)}'[/] ({escape(str(list_presets()[args.name]))}), resolved "
                      "(inherit: applied; a parent's component block with another name is replaced whole):",
                      highlight=False)
        shown = {k: v for k, v in preset.items() if k not in ("references",) and v not in ("", {}, None)}
        console.print(escape(yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, width=50).rstrip(), keep="\n"),
                      highlight=False, soft_wrap=True)
    return 0


def cmd_train(args) -> int:
    from tokzoo.config import load_preset

    load_preset(args.name)  # an unknown preset or a broken file is refused before torch is imported
    if args.launcher == "submitit":  # a cluster job (SLURM, or submitit's local executors)
        from tokzoo.cluster.submit import submit_train

        submit_train(args.name, args.overrides, cluster_options(args), resume=args.resume, stage=args.stage,
                     console=console, wait=args.wait)
        return 0
    refuse_cluster_flags(args)
    from tokzoo.train import run_training

    run_training(args.name, args.overrides, resume=args.resume, stage=args.stage, console=console)
    return 0


def cmd_bench(args) -> int:
    from tokzoo.bench.options import bench_options, check_options

    opts = bench_options(args)
    check_options(opts)  # what may be refused, before the harness (and torch) is imported
    from tokzoo.bench.harness import run_bench

    run_bench(opts, console)
    return 0


def cmd_sweep(args) -> int:
    from tokzoo.sweep import Sweep, sweep_settings

    if args.status or args.cancel:
        from tokzoo.sweep.jobs import cancel, status

        return status(Path(args.status), console) if args.status else cancel(Path(args.cancel), console)
    Sweep(**sweep_settings(args), console=console).run()
    return 0


def cmd_report(args) -> int:
    from tokzoo.bench.outputs import write_outputs
    from tokzoo.bench.results import load_results

    results = load_results(args.results)
    source = Path(args.results) if Path(args.results).is_dir() else Path(args.results).parent
    own = Path(args.results).is_dir() or Path(args.results).name == "results.json"
    if args.out is None and not own:  # results.<time>.json set aside: its numbers never beside today's pictures
        raise ConfigError(f"{args.results} is not the results.json of its folder, whose results.md, csv and "
                          f"report.html show that file: give the report a folder of its own, e.g. "
                          f"tokzoo report {args.results} --out {source / 'old-report'}")
    out = Path(args.out) if args.out is not None else source
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if args.baseline:  # an unreadable baseline, or one with no tokenizer in common: exit 2 before anything is written
        old = load_results(args.baseline)
        if not set(results["tokenizers"]) & set(old["tokenizers"]):
            listed = lambda r: ", ".join(sorted(r["tokenizers"])[:6]) + (" ..." if len(r["tokenizers"]) > 6 else "")  # noqa: E731
            raise ConfigError(f"--baseline {args.baseline} has no tokenizer in common with {args.results} "
                              f"(these: {listed(results) or 'none'}; the baseline's: {listed(old) or 'none'}); "
                              "pair names with tokzoo compare NEW --baseline OLD --match NEW_NAME OLD_NAME")
    elsewhere = out.resolve() != source.resolve()  # the results.json goes with the outputs made from it
    for path in write_outputs(out, results, args.baseline, results_json=elsewhere):
        console.print(escape(f"{path.name:13s} {path}"), highlight=False, soft_wrap=True)
    return 0


def cmd_import(args) -> int:
    from tokzoo.train.importer import import_release

    ckpt = import_release(args.preset, args.source, args.out, args.overrides, args.weights_dir)
    console.print(escape(f"imported {args.source} as {args.preset}: {ckpt}\n"
                         f"bench it: tokzoo bench --tokenizers {args.out}", keep="\n"), highlight=False)
    return 0


def cmd_compare(args) -> int:
    from tokzoo.bench.compare import (compare_results, data_notes, has_regression, load_results, match_names,
                                      name_notes, print_rows, rule_notes, to_markdown)

    if not args.baseline:
        raise ConfigError("give the baseline: tokzoo compare NEW.json --baseline OLD.json")
    new, old = load_results(args.new), load_results(args.baseline)
    new, old = match_names(new, old, args.match)
    rows = compare_results(new, old, args.tolerance)
    notes = [*name_notes(new, old), *rule_notes(rows, old), *data_notes(new, old)]
    md = to_markdown(rows, notes)
    print_rows(rows, notes, console)
    for target in filter(None, [args.markdown, os.environ.get("GITHUB_STEP_SUMMARY")]):
        try:
            with open(target, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(md)
        except OSError as exc:  # a missing folder or a read-only one: exit 2, never 1 (a regression)
            raise cannot_write(target, exc, "the Markdown table to") from None
    return 1 if has_regression(rows) else 0


def refuse_cluster_flags(args) -> None:
    given = cluster_flags_given(args)
    if given:
        raise ConfigError(f"{given[0]} is a cluster setting: add --launcher submitit (pip install 'tokzoo[slurm]')")


def build_parser() -> argparse.ArgumentParser:
    from tokzoo.bench.options import add_bench_arguments
    from tokzoo.sweep import sweep_parser

    p = argparse.ArgumentParser(prog="tokzoo", description="Train and benchmark discrete image tokenizers side by side.")
    p.add_argument("--version", action="version", version=f"tokzoo {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks (also TOKZOO_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("plugins", help="list installed plugins, their versions and hooks")
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser("list", help="list registered components (and presets)")
    s.add_argument("kind", nargs="?", help="encoder, quantizer, decoder, tokenizer, recipe, dataset, metric or preset")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("show", help="a component's parameters (type, default, help) or a preset's resolved config")
    s.add_argument("name", help="a component or preset name (see `tokzoo list`)")
    s.add_argument("--kind", default=None, help="only this kind: encoder, quantizer, ..., metric or preset")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("train", help="train a tokenizer preset: tokzoo train vqgan-tiny trainer.max_steps=50")
    s.add_argument("name", help="preset name (see `tokzoo list preset`) or a YAML file")
    s.add_argument("overrides", nargs="*", help="config overrides key=value")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    s.add_argument("--stage", type=int, default=None, help="start at this stage (1-based), from the previous stage's checkpoint")
    add_cluster_args(s)
    s.add_argument("--wait", action="store_true", help="--cluster slurm: wait for the job, its last log line shown")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("bench", help="benchmark tokenizers under one protocol")
    add_bench_arguments(s)
    s.set_defaults(func=cmd_bench)

    sweep_parser(sub)
    sub.choices["sweep"].set_defaults(func=cmd_sweep)

    s = sub.add_parser("report", help="write results.md/csv, tradeoff.png and report.html again from a results.json")
    s.add_argument("results", help="a results.json, or the folder holding it")
    s.add_argument("--baseline", default=None, help="a results.json to compare against")
    s.add_argument("--out", default=None, help="write into this folder (default: the results' own folder; "
                   "needed for a set-aside results.<time>.json)")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("import", help="a released tokenizer's file -> a run folder: "
                                      "tokzoo import llamagen-vq16 vq_ds16_c2i.pt --out runs/llamagen")
    s.add_argument("preset", help="a ready-made tokenizer preset (e.g. llamagen-vq16, taming-f16-16384)")
    s.add_argument("source", help="the released checkpoint file (a path, or a name in --weights-dir)")
    s.add_argument("--out", required=True, help="the run folder to write")
    s.add_argument("overrides", nargs="*", help="model.<param>=V overrides of the preset")
    s.add_argument("--weights-dir", default=None, help="folder of released files (or TOKZOO_WEIGHTS_DIR)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("compare", help="regression table between two results.json files")
    s.add_argument("new", help="the new results.json")
    s.add_argument("--baseline", help="the baseline results.json")
    s.add_argument("--tolerance", default=None, help="per-metric tolerances, e.g. psnr=0.2,rfid=10%%")
    s.add_argument("--match", nargs=2, action="append", metavar=("NEW", "OLD"),
                   help="compare the new results' tokenizer NEW with the baseline's OLD (repeat for more "
                        "pairs); NEW may be a pattern: --match 'K=*' semhitok-tiny compares every sweep point")
    s.add_argument("--markdown", default=None, help="append the Markdown table to this file (CI step summary)")
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug_flag = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    args, extra = parser.parse_known_args(argv)
    args.debug = debug_flag
    if extra:  # overrides may follow options: tokzoo train NAME --stage 2 trainer.lr=1e-4
        if getattr(args, "command", None) in ("train", "bench", "import") and all("=" in e and not e.startswith("-")
                                                                       for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = bool(args.debug or os.environ.get("TOKZOO_DEBUG"))
    try:
        if args.command in ("list", "train", "bench", "import", "sweep"):
            warn_plugins()
        return int(args.func(args) or 0)
    except TokzooError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc), keep=chr(10))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
