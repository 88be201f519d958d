"""Configs: YAML presets, command-line overrides and schema validation.

A *preset* is a YAML file named after what it trains (``vqgan-tiny.yaml``).
Presets are found, in order, in the folders of ``TOKZOO_CONFIG_PATH``
(``os.pathsep``-separated), then in the folders registered through
``tokzoo_register_presets`` - core's own (``tokzoo/configs``, package data)
first, like any plugin's. A preset
may start from another with ``inherit: other-preset``.

Configs are data: no key is ever resolved to an import path. Component names
resolve only through the registry, and every mapping is checked against a
dataclass schema, so a misspelled key or a wrong type fails before any work
starts, naming the key and its closest valid spelling.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokzoo.errors import ConfigError, UnknownNameError, closest
# the schema code lives in its own leaf (the registry builds on it); its names stay importable from here
from tokzoo.schema import HOST_PARAMS, Spec, check_keys, schema_of, to_container, validate_params  # noqa: F401


@dataclass
class TrainerConfig:
    """How the trainer runs (per-stage budgets live in the recipe)."""

    batch_size: int = 16
    lr: float = 2e-4  # peak: linear warm-up over warmup_steps, then cosine down to lr/10 at the stage's last step
    weight_decay: float = 0.0
    beta1: float = 0.5
    beta2: float = 0.9
    warmup_steps: int = 0
    grad_clip: float = 1.0
    grad_accum: int = 1
    ema_decay: float = 0.0  # 0 disables the EMA copy of the weights
    max_steps: int = -1  # when > 0, caps every stage's steps (quick runs)
    log_every: int = 10
    ckpt_every: int = 100
    eval_images: int = 64
    num_workers: int | str = "auto"  # loader processes; auto: none on the CPU, one per core but one (<= 8) on a GPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "fp32"  # fp32 | bf16
    tf32: bool = True  # fp32 matmuls and convolutions in TF32 on CUDA (no effect on the CPU)
    memory_format: str = "auto"  # auto: channels_last on CUDA, contiguous elsewhere | channels_last | contiguous
    compile: bool = False  # torch.compile the tokenizer and the recipe's loss networks (LPIPS, discriminator)
    checkpoint_activations: bool = False  # recompute blocks that support it in backward: less memory, more time


@dataclass
class RunConfig:
    """A whole run: what to build, on which data, how to train it."""

    preset: str = ""
    model_kind: str = "tokenizer"  # registry kind of `model` (tokenizer; encoder for teachers)
    model: Any = None  # component spec {name: ..., **params}
    data: Any = field(default_factory=lambda: {"name": "shapes"})
    recipe: Any = None  # how to train it; a preset without one is a ready-made tokenizer (bench only)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    run_dir: str = ""
    init_from: str = ""  # start from this checkpoint (fine-tuning a released model)
    references: Any = field(default_factory=dict)  # filled by the trainer: configs of checkpoints the model refers to


# -- presets -----------------------------------------------------------------------
def preset_dirs() -> list[Path]:
    from tokzoo.registry import get_registry

    dirs = [Path(p) for p in os.environ.get("TOKZOO_CONFIG_PATH", "").split(os.pathsep) if p]
    dirs += [d for _, d, _ in get_registry().preset_dirs]
    return dirs


def list_presets() -> dict[str, Path]:
    """Preset name -> YAML file (earlier folders win)."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for f in sorted(d.rglob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


#: a config or experiment file tokzoo reads: at most this many bytes, and this many values once its
#: YAML aliases are expanded (a few hundred bytes of nested aliases would otherwise expand into GBs)
YAML_MAX_BYTES = 1 << 20
YAML_MAX_VALUES = 100_000


def _bounded_yaml(path: Path, what: str) -> Any:
    """``path`` read as plain YAML data, refused (ConfigError naming the file) when
    larger than :data:`YAML_MAX_BYTES` or expanding to more than :data:`YAML_MAX_VALUES`
    values: checked before anything copies, prints or merges it."""
    with open(path, "rb") as f:
        raw = f.read(YAML_MAX_BYTES + 1)
    if len(raw) > YAML_MAX_BYTES:
        raise ConfigError(f"{what} {path}: larger than {YAML_MAX_BYTES >> 20} MB; a config file is a few KB")
    data = yaml.safe_load(raw.decode("utf-8"))  # an alias shares the object: nothing is expanded yet
    budget = [YAML_MAX_VALUES]

    def count(node: Any) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError(f"{what} {path}: more than {YAML_MAX_VALUES:,} values once its YAML aliases "
                              "(&name / *name) are expanded; a config file holds far fewer")
        for child in (node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()):
            count(child)

    count(data)
    return data


def _read_yaml(path: Path) -> dict:
    try:
        _bounded_yaml(path, "config")
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except RecursionError:
        raise ConfigError(f"cannot read config {path}: nested too deeply") from None
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def read_experiment_file(path: str | Path, keys, what: str) -> dict[str, Any]:
    """A user's experiment file (``--config FILE`` of bench and sweep): plain
    YAML (read as data: no interpolation), a mapping whose every key is one of
    ``keys``; a misspelled key is refused with its closest spelling."""
    p = Path(path)
    try:
        data = _bounded_yaml(p, "--config")
    except FileNotFoundError:
        raise ConfigError(f"--config {p}: no such file") from None
    except RecursionError:
        raise ConfigError(f"--config {p}: nested too deeply") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--config {p}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of {what}, got {type(data).__name__}")
    for key in data:
        if key not in keys:
            hint = closest(str(key), keys)
            raise ConfigError(f"--config {p}: unknown key '{key}'" + (f": did you mean '{hint}'?" if hint else "")
                              + f" Valid keys: {', '.join(keys)}")
    return data


def load_preset(name: str) -> DictConfig:
    """A preset by name (or a path to a YAML file), with ``inherit`` resolved.

    ``inherit: parent`` merges this preset over the parent's by the same rule
    as command-line overrides (:func:`merge_specs`): a component spec with
    another ``name`` replaces the parent's spec, the same ``name`` merges keys."""
    data, path = _preset_data(name, ())
    cfg = OmegaConf.create(data)
    cfg.preset = path.stem
    return cfg


def _key_lines(path: Path) -> dict[str, int]:
    """Dotted key -> the line (1-based) of ``path`` that sets it (nothing for a file yaml cannot compose)."""
    out: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[key] = k.start_mark.line + 1
                walk(v, key)

    try:
        walk(yaml.compose(Path(path).read_text()), "")
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return out


def source_of(key: str | None, files: list[Path], overrides: list[str]) -> str | None:
    """Where config key ``key`` (or its closest enclosing key) was set: the command line, or a
    preset file and line (the last of the inherit chain that sets it)."""
    if not key:
        return None
    given = {o.split("=", 1)[0].strip() for o in overrides if "=" in o}
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        k = ".".join(parts[:n])
        if k in given:
            return f"given on the command line as {k}=..."
        for f in reversed(files):
            line = _key_lines(f).get(k)
            if line:
                return f"set in {f}, line {line}"
    return None


def _preset_data(name: str, seen: tuple[str, ...], files: list[Path] | None = None) -> tuple[dict, Path]:
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        path = Path(name)
    else:
        presets = list_presets()
        if name not in presets:
            from tokzoo.registry import get_registry

            err, notes = UnknownNameError("preset", name, presets), get_registry().plugin_notes()
            if notes:  # e.g. a plugin whose presets were left out of its package
                err.args = (err.args[0] + "\n" + notes,)
            raise err
        path = presets[name]
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is not None and not (isinstance(parent, str) and parent):
        raise ConfigError(f"preset {path}: 'inherit' names the preset it builds on (a name such as vq-tiny), "
                          f"not {parent!r:.60}")
    if parent:
        if parent in seen or parent == name:
            raise ConfigError(f"preset '{name}' inherits from itself through {' -> '.join(seen + (name, parent))}")
        base, _ = _preset_data(parent, seen + (name,), files)
        base.pop("preset", None)
        data = merge_specs(base, data)
    if files is not None:
        files.append(path)  # the inherit chain, the root first
    return data, path


def parse_overrides(overrides: list[str]) -> DictConfig:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not of the form key=value (e.g. trainer.max_steps=50)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None


def merge_specs(base: Any, over: Any) -> Any:
    """Deep-merge ``over`` into ``base``; a component spec given with another
    ``name`` replaces the old spec instead of inheriting its keys (so
    ``data={name: imagefolder, path: ...}`` over a ``shapes`` preset does not
    keep shapes' ``captions``)."""
    if isinstance(base, dict) and isinstance(over, dict):
        if "name" in over and base.get("name") != over["name"]:
            return over
        out = dict(base)
        for k, v in over.items():
            out[k] = merge_specs(base[k], v) if k in base else v
        return out
    return over


def load_run_config(name: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Preset + overrides, validated against :class:`RunConfig`, as a plain dict."""
    files: list[Path] = []
    data, path = _preset_data(name, (), files)
    cfg = OmegaConf.create(data)
    cfg.preset = path.stem
    if overrides:  # merged unresolved: a value is the text given, never an interpolation
        cfg = OmegaConf.create(merge_specs(OmegaConf.to_container(cfg, resolve=False),
                                           OmegaConf.to_container(parse_overrides(overrides), resolve=False)))
    try:
        return _validated(name, to_container(cfg))
    except (ConfigError, UnknownNameError) as exc:  # name the file and line (or the override) it came from
        where = source_of(getattr(exc, "key_path", None), files, overrides or [])
        if where:
            exc.args = (f"{exc} ({where})",)
        raise


def _validated(name: str, data: dict[str, Any]) -> dict[str, Any]:
    out = validate_params(data, RunConfig)
    if not out.get("model"):
        raise ConfigError(f"preset '{name}' has no 'model' section")
    if out["model_kind"] not in ("tokenizer", "encoder"):
        raise ConfigError(f"model_kind must be 'tokenizer' or 'encoder', not '{out['model_kind']}'")
    check_trainer(out["trainer"])
    validate_spec(out["model_kind"], out["model"], "model")
    validate_spec("dataset", out["data"], "data")
    if out["recipe"] is not None:
        validate_spec("recipe", out["recipe"], "recipe")
    if not out["run_dir"]:
        out["run_dir"] = str(Path("runs") / out["preset"])
    return out


#: trainer values that must be > 0, >= 0, or one of a set: checked before anything runs
_POSITIVE = ("batch_size", "grad_accum", "log_every", "ckpt_every", "eval_images")
_NON_NEGATIVE = ("lr", "weight_decay", "warmup_steps", "grad_clip")
_CHOICES = {"precision": ("fp32", "bf16"), "memory_format": ("auto", "channels_last", "contiguous")}


def check_trainer(t: dict[str, Any]) -> None:
    """One clear ConfigError for a trainer value that cannot work."""
    import math

    for key in _POSITIVE:
        if t[key] <= 0:
            raise ConfigError(f"trainer.{key} must be a positive integer, not {t[key]}")
    for key in _NON_NEGATIVE:
        if not t[key] >= 0 or (isinstance(t[key], float) and math.isinf(t[key])):
            raise ConfigError(f"trainer.{key} must be a finite number >= 0, not {t[key]}")
    w = t["num_workers"]
    if w != "auto" and (isinstance(w, bool) or not isinstance(w, int) or w < 0):
        raise ConfigError(f"trainer.num_workers must be 'auto' or a count >= 0, not {w}")
    if t["max_steps"] == 0 or t["max_steps"] < -1:
        raise ConfigError(f"trainer.max_steps must be a positive cap on every stage's steps, or -1 for none "
                          f"(the default), not {t['max_steps']}")
    for key in ("beta1", "beta2", "ema_decay"):
        if not 0 <= t[key] < 1:
            raise ConfigError(f"trainer.{key} must be in [0, 1), not {t[key]}")
    from tokzoo.device import check_device_name

    check_device_name(t["device"], "trainer.device")  # the one rule, also bench --device's
    for key, allowed in _CHOICES.items():
        value = str(t[key])
        if value not in allowed:
            hint = closest(value, allowed)
            raise ConfigError(f"trainer.{key}={value} is not one of {', '.join(allowed)}"
                              + (f" (did you mean '{hint}'?)" if hint else ""))


def validate_spec(kind: str, spec: Any, where: str) -> None:
    """Check a component spec ``{name, **params}`` (recursively for nested specs)."""
    from tokzoo.registry import get_registry

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"'{where}' must be a mapping with a 'name' key")
    params = {k: v for k, v in spec.items() if k != "name"}
    try:
        comp = get_registry().get(kind, spec["name"])
    except UnknownNameError as exc:
        exc.key_path = f"{where}.name"
        raise
    if comp.config is None:
        return
    validate_params(params, comp.config, where=f"{where} ({kind} '{spec['name']}')")
    nested = getattr(comp.config, "__nested_specs__", {})
    for key, sub_kind in nested.items():
        if key in params:
            validate_spec(sub_kind, params[key], f"{where}.{key}")
