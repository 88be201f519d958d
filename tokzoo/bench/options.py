"""What a bench is asked to do: :class:`BenchOptions`, their checks, and the
``tokzoo bench`` arguments (one parser definition, shared by the CLI and by
``tokzoo sweep --bench-args``)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from tokzoo.errors import ConfigError

DEFAULT_METRICS = ["psnr", "ssim", "lpips", "rfid", "codebook", "probe", "throughput"]


@dataclass
class BenchOptions:
    tokenizers: list[str]
    data: str = "shapes"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    num_images: int | str = 512  # or "all": every image of the val split
    batch_size: int = 32
    probe_train_images: int = 1024
    out_dir: str = "runs/bench"
    weights_dir: str | None = None
    device: str = "auto"
    grid_images: int = 8
    baseline: str | None = None  # a results.json whose compare rows go into report.html
    swept: dict[str, dict[str, Any]] = field(default_factory=dict)  # tokenizer -> its values in a sweep
    data_params: dict[str, Any] = field(default_factory=dict)  # data.<param>=... overrides
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics.<metric>.<param>=...


def check_options(opts: BenchOptions) -> None:
    """Refuse options that cannot work (ConfigError, exit 2), before any work."""
    from tokzoo.registry import get_registry
    from tokzoo.schema import validate_params

    reg = get_registry()
    for m in opts.metrics:
        reg.get("metric", m)  # unknown names fail before any work
    for m in opts.metric_params:
        if m not in opts.metrics:
            raise ConfigError(f"metrics.{m}.*: '{m}' is not among the metrics measured ({', '.join(opts.metrics)})")
        comp = reg.get("metric", m)
        if comp.config is not None:
            validate_params(opts.metric_params[m], comp.config, where=f"metrics.{m}")
    if not opts.tokenizers:
        raise ConfigError("give at least one tokenizer: --tokenizers vqgan-tiny,semhitok-tiny")
    if opts.num_images != "all" and (not isinstance(opts.num_images, int) or opts.num_images <= 0):
        raise ConfigError(f"--num-images must be a positive integer or 'all', not {opts.num_images}")
    for flag, value in (("--batch-size", opts.batch_size), ("--probe-train-images", opts.probe_train_images)):
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{flag} must be a positive integer, not {value}")
    if opts.baseline:  # a baseline that cannot be read fails now, not after the measuring
        from tokzoo.bench.results import load_results

        load_results(opts.baseline)


# -- the command line ----------------------------------------------------------------------
def count(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not '{text}'")
    return value


def count_or_all(text: str) -> int | str:
    return "all" if text == "all" else count(text)


def add_bench_arguments(s: argparse.ArgumentParser) -> None:
    """The ``tokzoo bench`` arguments, on ``s``."""
    s.add_argument("--tokenizers", required=True, help="comma list of presets (their trained run) or checkpoint paths")
    s.add_argument("--data", default="shapes", help="a dataset name (its val split) or imagefolder:PATH")
    s.add_argument("overrides", nargs="*", help="data.<param>=V and metrics.<metric>.<param>=V "
                                                "(e.g. metrics.lpips.net=vgg)")
    s.add_argument("--metrics", default="", help=f"comma list (default: {','.join(DEFAULT_METRICS)})")
    s.add_argument("--num-images", type=count_or_all, default=512,
                   help="images to measure, or 'all' (part of the protocol; more than the split has is an error)")
    s.add_argument("--batch-size", type=count, default=32)
    s.add_argument("--probe-train-images", type=count, default=1024, help="train-split images for the linear probe")
    s.add_argument("--out", default="runs/bench", help="run folder for results.json/md/csv and recon_grid.png")
    s.add_argument("--weights-dir", default=None, help="folder of pretrained weight files (or TOKZOO_WEIGHTS_DIR)")
    s.add_argument("--device", default="auto")
    s.add_argument("--baseline", default=None, help="a results.json to compare against in report.html")


def bench_overrides(overrides: list[str]) -> tuple[dict, dict]:
    """``data.<param>=V`` and ``metrics.<metric>.<param>=V`` -> (data params, metric params)."""
    from tokzoo.config import parse_overrides, to_container

    tree = to_container(parse_overrides(list(overrides))) if overrides else {}
    unknown = [k for k in tree if k not in ("data", "metrics")]
    if unknown:
        raise ConfigError(f"bench takes data.<param>=... and metrics.<metric>.<param>=... overrides, not "
                          f"'{unknown[0]}' (e.g. data.path=/data/val metrics.lpips.net=vgg)")
    data, metrics = tree.get("data") or {}, tree.get("metrics") or {}
    if not isinstance(data, dict) or not isinstance(metrics, dict) or \
            not all(isinstance(v, dict) for v in metrics.values()):
        raise ConfigError("bench overrides are data.<param>=VALUE and metrics.<metric>.<param>=VALUE")
    return data, metrics


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """Parsed ``tokzoo bench`` arguments -> :class:`BenchOptions`."""
    data_params, metric_params = bench_overrides(args.overrides)
    return BenchOptions(
        data_params=data_params, metric_params=metric_params,
        tokenizers=[t.strip() for t in args.tokenizers.split(",") if t.strip()],
        data=args.data, metrics=[m.strip() for m in args.metrics.split(",")] if args.metrics else list(DEFAULT_METRICS),
        num_images=args.num_images, batch_size=args.batch_size, probe_train_images=args.probe_train_images,
        out_dir=args.out, weights_dir=args.weights_dir, device=args.device, baseline=args.baseline)


def parse_bench_args(words: list[str], tokenizers: str) -> BenchOptions:
    """``tokzoo bench`` words without ``--tokenizers`` (as ``tokzoo sweep
    --bench-args`` takes them) -> options; argparse prints what is wrong, then ConfigError."""
    parser = argparse.ArgumentParser(prog="tokzoo bench")
    add_bench_arguments(parser)
    try:
        args = parser.parse_args(["--tokenizers", tokenizers, *words])
    except SystemExit:
        raise ConfigError(f"--bench-args '{' '.join(words)}' is not valid") from None
    return bench_options(args)
