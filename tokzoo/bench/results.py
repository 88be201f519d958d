"""The results model and file: what an entry holds (:class:`Entry`,
:class:`Results`), reading a results.json, and merging a bench into the one
already in its folder (kept under the same protocol, set aside whole under
another, never mixed and never lost)."""
from __future__ import annotations

import json
import math
import os
import re
import time
import types
import typing
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Callable, Literal, TypedDict

from tokzoo.bench.protocol import PROTOCOL_KEYS, protocol_value, same_metric_settings
from tokzoo.errors import ConfigError
from tokzoo.textsafe import console as esc


#: what a metric's picture may be called (Metric.images): it becomes the file name PICTURE_grid.png in
#: --out, so the same rule holds for a name read back from a folder's grid_samples.safetensors
PICTURE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class Entry(TypedDict, total=False):
    """One tokenizer's results (``results["tokenizers"][name]``): the one
    statement of what an entry holds, which every output reads."""

    metrics: dict[str, float]  # result name -> value (``usage/<level>``, ``perplexity/<level>`` per level)
    intervals: dict[str, list[float]]  # result -> [lo, hi], bootstrap 95 % over the images
    better: dict[str, Literal["higher", "lower"]]  # result -> which way is better (absent: informational)
    flags: dict[str, str]  # result -> why the number may mislead (shown with a dagger)
    unavailable: dict[str, str]  # metric -> why it was not measured
    info: dict[str, Any]  # TokenizerInfo.as_dict(): resolution, layout, token grid, vocab, tokens and bits per image
    token_features: str | None  # how the probe's features come from the tokens (Tokenizer.token_features_kind)
    resolution: int
    num_images: int  # images measured (the number asked for less the skipped ones)
    skipped_images: int  # unreadable images skipped among those asked for
    skipped: list[str]  # the first skipped files, "path: why"
    dataset: str  # the images' fingerprint
    data_fingerprints: dict[str, str]  # split -> fingerprint (images, labels) of what was measured or trained on
    extractors: dict[str, str]  # feature-extractor file -> SHA-256
    protocol_key: str  # what a re-bench must match to reuse this entry
    identity: dict[str, Any]  # checkpoint, config, metrics, weight files, plugins, components
    random_parts: list[str]  # pretrained parts deliberately random: never comparable with a real one
    unfinished: str | None  # a preset's run that never finished: the checkpoint benched
    swept: dict[str, Any]  # a sweep point's values, alias -> value
    metric_protocols: dict[str, dict[str, Any]]  # metric -> its own settings (Metric.protocol), when it has any
    asked: list[str]  # the metrics the bench that measured this entry was asked for
    sources: dict[str, str]  # result name -> the metric that gave it
    repeats: dict[str, Any]  # training repeats: {"n", "seeds", "sd": {result: sample sd across repeats}}
    path: str  # what was benched (a run folder or checkpoint path) when the entry's name is not it


class Results(TypedDict):
    """A results.json: the protocol block and the entries, by tokenizer name (a preset or a path)."""

    tokzoo_results: int
    protocol: dict[str, Any] | None
    tokenizers: dict[str, Entry]


def fresh_results() -> Results:
    """An empty results dict."""
    return {"tokzoo_results": 1, "protocol": None, "tokenizers": {}}


def load_results(path: str | Path) -> Results:
    """A results.json (or a folder holding one), checked; ConfigError (exit 2) otherwise."""
    p = Path(path)
    if p.is_dir():
        if not (p / "results.json").is_file():
            raise ConfigError(f"{p} is a folder without a results.json")
        p = p / "results.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{p} is not a tokzoo results.json ({exc})") from None
    check_results(data, p)
    by_display_name(data)
    return data


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON is of the type ``hint`` (the annotations of :class:`Entry`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint in (int, float):
        number = isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values()) if args \
            else isinstance(value, dict)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    return isinstance(value, hint)


ENTRY_FIELDS = typing.get_type_hints(Entry)


def check_results(data: Any, p: Path | str) -> None:
    """A results dict read from ``p`` checked field by field against :class:`Entry`
    (every field an output reads), with one ConfigError naming the file, the
    tokenizer and the field: a hand-edited or foreign file never crashes a
    command after it has measured."""
    if not isinstance(data, dict) or not isinstance(data.get("tokenizers"), dict) or "protocol" not in data:
        raise ConfigError(f"{p} is not a tokzoo results.json (no 'tokenizers' / 'protocol')")
    protocol = data["protocol"]
    if protocol is not None and not (isinstance(protocol, dict) and all(
            isinstance(protocol.get(k, {}), dict) for k in ("metrics", "intervals", "extractors", "preprocessing"))):
        raise ConfigError(f"{p}: 'protocol' is not a mapping of tokzoo's protocol fields: a damaged or "
                          "hand-edited results file")
    for name, entry in data["tokenizers"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            raise ConfigError(f"{p}: tokenizer '{name}' has no 'metrics' mapping")
        bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ConfigError(f"{p}: tokenizer '{name}' metric '{bad[0]}' is not a number ({metrics[bad[0]]!r:.80})")
        odd = [k for k, v in metrics.items() if not math.isfinite(v)]
        if odd:  # Infinity or NaN: never compared, plotted or reported as if it were a measurement
            raise ConfigError(f"{p}: tokenizer '{name}' metric '{odd[0]}' is not finite ({metrics[odd[0]]!r}): "
                              "a damaged or hand-edited results file")
        for field, hint in ENTRY_FIELDS.items():
            if field in entry and not _fits(entry[field], hint):
                raise ConfigError(f"{p}: tokenizer '{name}' field '{field}' is not {_described(hint)} "
                                  f"({entry[field]!r:.80}): a damaged or hand-edited results file")
        for k, iv in entry.get("intervals", {}).items():
            if len(iv) != 2 or iv[0] > iv[1]:
                raise ConfigError(f"{p}: tokenizer '{name}' interval '{k}' is not [low, high] ({iv!r:.80})")
        reps = entry.get("repeats")
        if reps is not None and not (_fits(reps.get("n", 1), int) and _fits(reps.get("sd", {}), dict[str, float])):
            raise ConfigError(f"{p}: tokenizer '{name}' field 'repeats' needs n (a whole number) and sd (numbers)")


def _described(hint: Any) -> str:
    return {str: "text", int: "a whole number", float: "a number"}.get(hint) or str(hint).replace("typing.", "")


def load_previous(path: Path, protocol_now: dict[str, Any], tokenizers: list[str],
                  say: Callable[[str], None]) -> Results:
    """The results in ``path`` to merge this bench into: kept when measured under
    ``protocol_now`` (or when this bench re-measures all of them); otherwise set
    aside as ``results.<time>.json`` and a fresh dict returned. An unreadable
    file is kept as ``results.unreadable-<time>.json``. ``say`` tells the user."""
    if not path.is_file():
        return fresh_results()
    try:
        old = json.loads(path.read_text())
        check_results(old, path)  # a damaged entry is never merged (it would crash the writing after measuring)
    except (json.JSONDecodeError, UnicodeDecodeError, ConfigError, OSError):
        backup = path.with_name(f"results.unreadable-{int(time.time())}.json")
        os.replace(path, backup)
        say(f"[yellow]warning:[/] {esc(path)} was unreadable; kept it as {esc(backup)}")
        return fresh_results()
    same = all(protocol_value(old.get("protocol") or {}, k) == protocol_value(protocol_now, k)
               for k in PROTOCOL_KEYS if k != "extractors")
    same = same and same_metric_settings(old.get("protocol") or {}, protocol_now) is None
    if not same and any(e.get("path", k) not in tokenizers for k, e in old["tokenizers"].items()):
        backup = path.with_name(f"results.{time.strftime('%Y%m%d-%H%M%S')}.json")
        os.replace(path, backup)
        say(f"[yellow]note:[/] {esc(path)} held results under another protocol; kept them as "
            f"{esc(backup)}")
        return fresh_results()
    return old


# -- one name per tokenizer ---------------------------------------------------------------------
def short_names(names: Iterable[str]) -> dict[str, str]:
    """How outputs name each tokenizer of ``names``: a preset's own name; a
    path's last folder, with its run folder when it is a checkpoint
    (``run/stage1-final``), and more of the path while it would read the same
    as another one's."""
    names = list(dict.fromkeys(names))
    parts, size = {}, {}
    for n in names:
        path = Path(n)
        parts[n] = ([p for p in path.parts if p not in ("checkpoints", path.anchor)] or [n]) if os.sep in n else [n]
        size[n] = 2 if len(parts[n]) > 1 and path.parent.name == "checkpoints" else 1
    while True:
        labels = {n: "/".join(parts[n][-size[n]:]) for n in names}
        seen: dict[str, list[str]] = {}
        for n, lab in labels.items():
            seen.setdefault(lab, []).append(n)
        grow = [n for same in seen.values() if len(same) > 1 for n in same if size[n] < len(parts[n])]
        if not grow:
            return labels
        for n in grow:
            size[n] += 1


def assign_names(asked: list[str], existing: dict[str, str]) -> dict[str, str]:
    """What each tokenizer of ``asked`` (presets or paths, as typed) is called in
    every output and as its results.json key: its :func:`short_names` label among
    everything in the same results, the key it already has when ``existing``
    (key -> what was benched) holds it, never a key another tokenizer holds."""
    by_source = {source: key for key, source in existing.items()}
    short = short_names([*existing.values(), *asked])
    taken, out = set(existing), {}
    for n in asked:
        if n in by_source:
            out[n] = by_source[n]
            continue
        name = next(c for c in (short[n], n, *(f"{n} ({i})" for i in range(2, 10 ** 6))) if c not in taken)
        out[n] = name
        taken.add(name)
    return out


def sources(results: Results) -> dict[str, str]:
    """results.json key -> what was benched (the ``path`` kept in the entry, else the key)."""
    return {k: e.get("path", k) for k, e in results["tokenizers"].items()}


def by_display_name(data: Results) -> dict[str, str]:
    """Re-key a results file written before entries were keyed by their display
    name (a path as its key): each such entry gets its :func:`short_names` label
    and keeps the path in ``path``. Returns old key -> new key of what moved."""
    typed = [k for k, e in data["tokenizers"].items() if "path" not in e and os.sep in k]
    if not typed:
        return {}
    short = short_names(list(data["tokenizers"]))
    new, moved = {}, {}
    for key, entry in data["tokenizers"].items():
        name = short[key] if key in typed else key
        if name in new or (name != key and name in data["tokenizers"]):
            name = key  # another entry holds that name: this one keeps its path as its name
        if name != key:
            entry = {**entry, "path": key}
            moved[key] = name
        new[name] = entry
    data["tokenizers"] = new
    return moved
