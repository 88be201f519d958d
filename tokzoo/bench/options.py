"""What a bench is asked to do: :class:`BenchOptions` (the one place their
defaults live), their checks, a bench protocol file (``--config FILE``), and
the ``tokzoo bench`` arguments (one parser definition, shared by the CLI and
by ``tokzoo sweep --bench-args``).

A protocol file is plain YAML whose keys are :class:`BenchOptions`' fields::

    tokenizers: [semhitok-tiny, vqgan-tiny]
    data: imagefolder:/data/imagenet     # or a registered dataset's name
    data_params: {labels: LOC_val_solution.csv}
    metrics: [psnr, ssim, lpips, rfid, codebook, probe, throughput]
    metric_params: {lpips: {net: vgg}}
    num_images: 50000
    probe_train_images: 1024

Options given on the command line override the file's; ``data.<p>=V`` and
``metrics.<m>.<p>=V`` are merged over its ``data_params`` / ``metric_params``.
Paths in the file are read from the working directory, as on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokzoo.errors import ConfigError, UnknownNameError
from tokzoo.workers import default_workers, resolve_workers  # noqa: F401 (default_workers: public here too)

DEFAULT_METRICS = ["psnr", "ssim", "lpips", "rfid", "codebook", "probe", "throughput"]


@dataclass
class BenchOptions:
    tokenizers: list[str]
    data: str = "shapes"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    num_images: int | str = 512  # or "all": every image of the val split
    batch_size: int = 32
    workers: int | str = "auto"  # loader processes decoding the next batches; "auto": default_workers(); 0: none
    probe_train_images: int = 1024
    out_dir: str = "runs/bench"
    weights_dir: str | None = None
    device: str = "auto"
    precision: str = "fp32"  # the tokenizers' encode and decode: fp32 (TF32 off), tf32, bf16 (autocast)
    grid_images: int = 8
    baseline: str | None = None  # a results.json whose compare rows go into report.html
    swept: dict[str, dict[str, Any]] = field(default_factory=dict)  # tokenizer -> its values in a sweep
    data_params: dict[str, Any] = field(default_factory=dict)  # data.<param>=... overrides
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # metrics.<metric>.<param>=...


def workers_of(opts: "BenchOptions", device: str) -> int:
    """The loader processes ``opts`` asks for (``auto`` resolved for ``device``, where the model runs)."""
    return resolve_workers(opts.workers, device)


def default(name: str) -> Any:
    """A :class:`BenchOptions` field's default (what the command line shows and falls back to)."""
    f = next(f for f in dataclasses.fields(BenchOptions) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def check_options(opts: BenchOptions, tokenizers: bool = True) -> None:
    """Refuse options that cannot work (ConfigError, exit 2), before any work
    (``tokenizers=False``: all but the tokenizer names and --out, for a sweep
    that names them itself once its points are trained)."""
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
    from tokzoo.data import parse_data_arg

    reg.get("dataset", parse_data_arg(opts.data)["name"])  # an unknown dataset: close matches, now
    if tokenizers:
        if not opts.tokenizers:
            raise ConfigError("give at least one tokenizer: --tokenizers vqgan-tiny,semhitok-tiny")
        for name in opts.tokenizers:  # a mistyped name fails before results.json is read, moved or written
            check_tokenizer_name(name)
    if opts.num_images != "all" and (isinstance(opts.num_images, bool) or not isinstance(opts.num_images, int)
                                     or opts.num_images <= 0):
        raise ConfigError(f"--num-images must be a positive integer or 'all', not {opts.num_images}")
    from tokzoo.device import check_device_name

    check_device_name(opts.device, "--device")  # the same rule as trainer.device; whether it is here: pick_device
    from tokzoo.bench.protocol import PRECISIONS

    if opts.precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {opts.precision!r:.40}")
    if opts.workers != "auto" and (isinstance(opts.workers, bool) or not isinstance(opts.workers, int)
                                   or opts.workers < 0):
        raise ConfigError(f"--workers must be 'auto' or a whole number >= 0, not {opts.workers!r}")
    for flag, value in (("--batch-size", opts.batch_size), ("--probe-train-images", opts.probe_train_images),
                        ("grid_images", opts.grid_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{flag} must be a positive integer, not {value}")
    if tokenizers:
        from tokzoo.runfolder import check_output_folder

        check_output_folder(opts.out_dir, "--out")
    if opts.baseline:  # a baseline that cannot be read fails now, not after the measuring
        from tokzoo.bench.results import load_results

        load_results(opts.baseline)
    for m in opts.metrics:  # a value a metric's constructor refuses (a size it lacks) fails now, not after
        try:                # --out is made; last, as it imports the metrics' backend (torch)
            reg.create("metric", m, **opts.metric_params.get(m, {}))
        except ConfigError:
            raise
        except Exception:  # a metric that cannot be built at all is reported unavailable when measured
            pass


def check_tokenizer_name(name: str) -> bool:
    """Refuse a name that is no existing path, preset or preset file (UnknownNameError with close
    matches), before anything is loaded or moved; True when it is a path (not a preset file)."""
    from tokzoo.config import list_presets

    p = Path(name).expanduser()
    is_yaml = p.suffix in (".yaml", ".yml") and p.is_file()  # a preset file, as `tokzoo train FILE` takes
    if p.exists() and not is_yaml:
        return True
    presets = list_presets()
    if name not in presets and not is_yaml:
        raise UnknownNameError("tokenizer (preset or checkpoint path)", name, presets)
    return False


# -- a protocol file ------------------------------------------------------------------------
#: fields a protocol file may set (the sweep's values are the sweep's own)
FILE_KEYS = tuple(f.name for f in dataclasses.fields(BenchOptions) if f.name != "swept")


def _names(value: Any, key: str, where: str) -> list[str]:
    """A list of names, or one comma-separated string of them."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ConfigError(f"{where}: '{key}' must be a list of names (or one comma-separated string), not {value!r}")


def read_bench_file(path: str | Path) -> dict[str, Any]:
    """A protocol file -> the :class:`BenchOptions` fields it sets, checked (ConfigError names the key)."""
    from tokzoo.config import read_experiment_file

    p = Path(path)
    out: dict[str, Any] = {}
    for key, value in read_experiment_file(p, FILE_KEYS, "bench options").items():
        if key in ("tokenizers", "metrics"):
            value = _names(value, key, f"--config {p}")
        elif key in ("data_params", "metric_params"):
            if not isinstance(value, dict) or (key == "metric_params"
                                               and not all(isinstance(v, dict) for v in value.values())):
                raise ConfigError(f"--config {p}: '{key}' must be a mapping"
                                  + (" of metric -> {param: value}" if key == "metric_params" else ""))
        elif key in ("data", "out_dir", "device", "precision") and not isinstance(value, str):
            raise ConfigError(f"--config {p}: '{key}' must be a string, not {value!r}")
        elif key in ("weights_dir", "baseline") and value is not None and not isinstance(value, str):
            raise ConfigError(f"--config {p}: '{key}' must be a path, not {value!r}")
        out[key] = value
    return out


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


def workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a whole number >= 0, not '{text}'")
    return value


def count_or_all(text: str) -> int | str:
    return "all" if text == "all" else count(text)


#: command-line flag -> BenchOptions field, for the flags that set one
FLAGS = {"tokenizers": "tokenizers", "data": "data", "metrics": "metrics", "num_images": "num_images",
         "batch_size": "batch_size", "workers": "workers", "probe_train_images": "probe_train_images", "out": "out_dir",
         "weights_dir": "weights_dir", "device": "device", "precision": "precision", "baseline": "baseline"}


def add_bench_arguments(s: argparse.ArgumentParser) -> None:
    """The ``tokzoo bench`` arguments, on ``s``. Their defaults are
    :class:`BenchOptions`' (argparse records only what was given, so that
    a ``--config`` file's values are overridden only by flags the user typed)."""
    d, none = default, argparse.SUPPRESS
    s.add_argument("--config", default=none, metavar="FILE",
                   help="a bench protocol file (YAML: tokenizers, data, metrics, num_images, ...); "
                        "flags given here override it")
    s.add_argument("--tokenizers", default=none, help="comma list of presets (their trained run) or checkpoint paths")
    s.add_argument("--data", default=none, help=f"a dataset name (its val split), imagefolder:PATH or textfolder:PATH "
                                                f"(default: {d('data')})")
    s.add_argument("overrides", nargs="*", help="data.<param>=V and metrics.<metric>.<param>=V "
                                                "(e.g. metrics.lpips.net=vgg)")
    s.add_argument("--metrics", default=none, help=f"comma list (default: {','.join(d('metrics'))})")
    s.add_argument("--num-images", type=count_or_all, default=none,
                   help="images to measure, or 'all' (part of the protocol; more than the split has is an error; "
                        f"default: {d('num_images')})")
    s.add_argument("--batch-size", type=count, default=none, help=f"images per batch (default: {d('batch_size')})")
    s.add_argument("--workers", type=workers_arg, default=none,
                   help="loader processes decoding the next batches while one is measured; 0: in the main "
                        "process; the numbers are the same with any count (default: auto: 0 when the model runs "
                        f"on the CPU, {default_workers()} with a GPU here)")
    s.add_argument("--probe-train-images", type=count, default=none,
                   help=f"train-split images for the linear probe (default: {d('probe_train_images')})")
    s.add_argument("--out", default=none, help=f"run folder for results.json/md/csv and recon_grid.png "
                                               f"(default: {d('out_dir')})")
    s.add_argument("--weights-dir", default=none, help="folder of pretrained weight files (or TOKZOO_WEIGHTS_DIR)")
    s.add_argument("--device", default=none, help=f"cpu, cuda, cuda:N, mps or auto (default: {d('device')})")
    s.add_argument("--precision", default=none,
                   help="the tokenizers' encode and decode: fp32 (TF32 off on a GPU), tf32, or bf16 (autocast); "
                        f"part of the protocol, marked in every output (default: {d('precision')})")
    s.add_argument("--baseline", default=none, help="a results.json to compare against in report.html")


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
    """Parsed ``tokzoo bench`` arguments -> :class:`BenchOptions`: the
    defaults, then the ``--config`` file, then the flags given."""
    given = vars(args)
    values = read_bench_file(given["config"]) if given.get("config") else {}
    for flag, name in FLAGS.items():
        if flag in given:
            v = given[flag]
            values[name] = _names(v, flag, f"--{flag}") if name in ("tokenizers", "metrics") else v
    data_params, metric_params = bench_overrides(given.get("overrides") or [])
    values["data_params"] = {**values.get("data_params", {}), **data_params}
    merged = {m: dict(p) for m, p in values.get("metric_params", {}).items()}
    if given.get("metrics") and values.get("metrics"):  # --metrics narrows the file's list: its parameters
        merged = {m: p for m, p in merged.items() if m in values["metrics"]}  # for the others do not apply
    for m, p in metric_params.items():
        merged[m] = {**merged.get(m, {}), **p}
    values["metric_params"] = merged
    values.setdefault("tokenizers", [])
    if "metrics" in values and not values["metrics"]:
        values["metrics"] = default("metrics")  # --metrics "" means the default set, as before
    return BenchOptions(**values)


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
