"""The results model and file: what an entry holds (:class:`Entry`,
:class:`Results`), reading a results.json, and merging a bench into the one
already in its folder (kept under the same protocol, set aside whole under
another, never mixed and never lost)."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, TypedDict

from tokzoo.bench.protocol import PROTOCOL_KEYS, same_metric_settings
from tokzoo.errors import ConfigError
from tokzoo.textsafe import console as esc


class Entry(TypedDict, total=False):
    """One tokenizer's results (``results["tokenizers"][name]``): the one
    statement of what an entry holds, which every output reads."""

    metrics: dict[str, float]  # result name -> value (``usage/<level>``, ``perplexity/<level>`` per level)
    intervals: dict[str, list[float]]  # result -> [lo, hi], bootstrap 95 % over the images
    better: dict[str, str]  # result -> "higher" | "lower" (absent: informational)
    flags: dict[str, str]  # result -> why the number may mislead (shown with a dagger)
    unavailable: dict[str, str]  # metric -> why it was not measured
    info: dict[str, Any]  # TokenizerInfo.as_dict(): resolution, layout, token grid, vocab, tokens and bits per image
    token_features: str | None  # how the probe's features come from the tokens (Tokenizer.token_features_kind)
    resolution: int
    num_images: int  # images measured (the number asked for less the skipped ones)
    skipped_images: int  # unreadable images skipped among those asked for
    skipped: list[str]  # the first skipped files, "path: why"
    dataset: str  # the images' fingerprint
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
    if not isinstance(data, dict) or not isinstance(data.get("tokenizers"), dict) or "protocol" not in data:
        raise ConfigError(f"{p} is not a tokzoo results.json (no 'tokenizers' / 'protocol')")
    for name, entry in data["tokenizers"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict):
            raise ConfigError(f"{p}: tokenizer '{name}' has no 'metrics' mapping")
        bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ConfigError(f"{p}: tokenizer '{name}' metric '{bad[0]}' is not a number ({metrics[bad[0]]!r})")
        odd = [k for k, v in metrics.items() if not math.isfinite(v)]
        if odd:  # Infinity or NaN: never compared, plotted or reported as if it were a measurement
            raise ConfigError(f"{p}: tokenizer '{name}' metric '{odd[0]}' is not finite ({metrics[odd[0]]!r}): "
                              "a damaged or hand-edited results file")
    return data


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
        assert isinstance(old, dict) and isinstance(old.get("tokenizers"), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, OSError):
        backup = path.with_name(f"results.unreadable-{int(time.time())}.json")
        os.replace(path, backup)
        say(f"[yellow]warning:[/] {esc(path)} was unreadable; kept it as {esc(backup)}")
        return fresh_results()
    same = all((old.get("protocol") or {}).get(k) == protocol_now.get(k) for k in PROTOCOL_KEYS if k != "extractors")
    same = same and same_metric_settings(old.get("protocol") or {}, protocol_now) is None
    if not same and any(k not in tokenizers for k in old["tokenizers"]):
        backup = path.with_name(f"results.{time.strftime('%Y%m%d-%H%M%S')}.json")
        os.replace(path, backup)
        say(f"[yellow]note:[/] {esc(path)} held results under another protocol; kept them as "
            f"{esc(backup)}")
        return fresh_results()
    return old
