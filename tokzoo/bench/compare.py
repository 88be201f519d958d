"""``tokzoo compare NEW.json --baseline OLD.json``: a regression table.

Each tokenizer x metric present in the baseline gets old, new, delta and a
verdict, using the metric's direction (recorded in the results) and one
rule, printed with the row: ``ok`` within it, ``better`` / ``REGRESSION``
beyond it, ``missing`` when the new results lack it. The rule is, in order:

1. a tolerance given with ``--tolerance`` for that metric;
2. the noise band, when both results carry a bootstrap 95 % interval for the
   metric: a change counts only when ``|new - old| > sqrt(h_old² + h_new²)``,
   ``h`` being each interval's half-width (the 95 % interval of a difference
   of two independent means; conservative for the same images);
3. the default tolerance of the metric's family (``DEFAULT_TOLERANCES``).

Throughput is informational unless given a tolerance explicitly (shared
machines are noisy). Results measured under different protocols are
refused, naming the field that differs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from tokzoo.bench.protocol import PROTOCOL_KEYS, same_metric_settings
from tokzoo.bench.results import Results, load_results  # noqa: F401 (load_results: importable here)
from tokzoo.bench.stats import half_width
from tokzoo.textsafe import md
from tokzoo.errors import ConfigError, TokzooError

#: default tolerances: ("abs" | "rel", amount)
DEFAULT_TOLERANCES = {
    "psnr": ("abs", 0.1), "ssim": ("abs", 0.005), "lpips": ("abs", 0.005), "rfid": ("rel", 0.05),
    "probe_top1": ("abs", 0.01), "usage": ("abs", 0.02), "perplexity": ("rel", 0.05),
    # the AR probe's numbers without an interval: a GPT trained on a CPU for minutes
    "ar_nll_bits_per_token": ("rel", 0.03), "gfd_judge": ("rel", 0.10), "gfid": ("rel", 0.05),
}
INFORMATIONAL = ("encode_img_s", "decode_img_s", "tokens_per_image", "bits_per_image")


class ProtocolMismatch(TokzooError):
    exit_code = 2


@dataclass
class Row:
    tokenizer: str
    metric: str
    old: float | None
    new: float | None
    verdict: str
    rule: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


def parse_tolerances(spec: str | None, defaults: bool = True) -> dict[str, tuple[str, float]]:
    """``"psnr=0.2,rfid=10%"`` -> {psnr: (abs, 0.2), rfid: (rel, 0.10)} (over the
    defaults unless ``defaults=False``)."""
    out = dict(DEFAULT_TOLERANCES) if defaults else {}
    if not spec:
        return out
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"--tolerance '{part}' must look like metric=0.1 or metric=5%")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = ("rel", float(v[:-1]) / 100) if v.strip().endswith("%") else ("abs", float(v))
        except ValueError:
            raise ConfigError(f"--tolerance '{part}': '{v}' is not a number") from None
        if not math.isfinite(out[k.strip()][1]) or out[k.strip()][1] < 0:
            raise ConfigError(f"--tolerance '{part}': a tolerance is a finite number >= 0")
    return out


def check_protocols(new: dict, old: dict) -> None:
    pn, po = new["protocol"] or {}, old["protocol"] or {}
    for key in PROTOCOL_KEYS:
        if pn.get(key) != po.get(key):
            raise ProtocolMismatch(f"refusing to compare: the protocols differ in '{key}' "
                                   f"(new: {json.dumps(pn.get(key))}, baseline: {json.dumps(po.get(key))})")
    differs = same_metric_settings(po, pn)
    if differs:
        a, b = pn["metrics"][differs], po["metrics"][differs]
        keys = ", ".join(f"{k} {json.dumps(a.get(k))} vs {json.dumps(b.get(k))}" for k in sorted(set(a) | set(b))
                         if a.get(k) != b.get(k))
        raise ProtocolMismatch(f"refusing to compare: '{differs}' was measured under other settings "
                               f"(new vs baseline: {keys})")
    for name, e in new["tokenizers"].items():
        o = old["tokenizers"].get(name)
        if o and o.get("resolution") != e.get("resolution"):
            raise ProtocolMismatch(f"refusing to compare '{name}': measured at resolution {e.get('resolution')} "
                                   f"now and {o.get('resolution')} in the baseline")


def data_notes(new: dict, old: dict) -> list[str]:
    """One line per tokenizer measured on other images than in the baseline (the
    entries' dataset fingerprints differ under one protocol): shown, not refused,
    since a folder copied to another machine differs in its file times only."""
    out = []
    for name, e in new["tokenizers"].items():
        o = old["tokenizers"].get(name) or {}
        if (e.get("skipped_images") or 0) != (o.get("skipped_images") or 0):
            out.append(f"note: '{name}' skipped {e.get('skipped_images') or 0} unreadable image(s) now and "
                       f"{o.get('skipped_images') or 0} in the baseline: its numbers are over other images")
        if e.get("dataset") and o.get("dataset") and e["dataset"] != o["dataset"]:
            out.append(f"note: '{name}' was measured on other data than the baseline ({e['dataset']} now, "
                       f"{o['dataset']} then): if the images differ, its deltas compare different images")
    return out


def _tolerance(metric: str, tol: dict[str, tuple[str, float]]) -> tuple[str, float] | None:
    if metric in tol:
        return tol[metric]
    family = metric.split("/")[0]
    if metric in INFORMATIONAL:
        return None
    return tol.get(family, ("abs", 0.0))


def _allowed(metric: str, ov: float, o: dict, n: dict, explicit: dict, tol: dict) -> tuple[float, str] | None:
    """(the change that still counts as no change, the rule that says so), None: informational."""
    mine = explicit.get(metric) or explicit.get(metric.split("/")[0])
    if mine is None:
        ho, hn = (half_width((e.get("intervals") or {}).get(metric)) for e in (o, n))
        if ho is not None and hn is not None:
            band = math.hypot(ho, hn)
            return band, f"noise ±{band:.3g}"
    t = mine or _tolerance(metric, tol)
    if t is None:
        return None
    allowed = t[1] * abs(ov) if t[0] == "rel" else t[1]
    source = "tolerance" if mine else "default"
    return allowed, f"{source} ±{t[1] * 100:g}%" if t[0] == "rel" else f"{source} ±{t[1]:g}"


def compare(new_path, baseline_path, tolerance: str | None = None) -> list[Row]:
    return compare_results(load_results(new_path), load_results(baseline_path), tolerance)


def compare_results(new: Results, old: Results, tolerance: str | None = None) -> list[Row]:
    """The rows of ``new`` against the baseline ``old`` (both loaded results)."""
    check_protocols(new, old)
    tol, explicit = parse_tolerances(tolerance), parse_tolerances(tolerance, defaults=False)
    rows: list[Row] = []
    for name, o in old["tokenizers"].items():
        n = new["tokenizers"].get(name)
        better = {**o.get("better", {}), **((n or {}).get("better", {}))}
        for metric, ov in o["metrics"].items():
            nv = None if n is None else n["metrics"].get(metric)
            if nv is None:
                rows.append(Row(name, metric, ov, None, "missing"))
                continue
            direction = better.get(metric)
            rule = _allowed(metric, ov, o, n, explicit, tol)
            if direction is None or rule is None:
                rows.append(Row(name, metric, ov, nv, "info"))
                continue
            allowed, why = rule
            gain = (nv - ov) if direction == "higher" else (ov - nv)
            verdict = "ok" if abs(gain) <= allowed else ("better" if gain > 0 else "REGRESSION")
            rows.append(Row(name, metric, ov, nv, verdict, why))
    return rows


def fmt(v: float | None) -> str:
    """A compared number, as the table and report.html show it."""
    return "n/a" if v is None else f"{v:.4g}"


RULES = ("rules: 'tolerance' = given with --tolerance; 'noise' = outside the bootstrap 95 % noise band "
         "sqrt(h_old² + h_new²) of the two results' intervals; 'default' = the metric's default tolerance "
         "(no interval on both sides)")


def to_markdown(rows: list[Row], notes: list[str] = ()) -> str:
    regress = sum(r.verdict in ("REGRESSION", "missing") for r in rows)
    head = f"**tokzoo compare: {'FAIL, ' + str(regress) + ' regression(s)' if regress else 'PASS'}**\n\n"
    lines = ["| tokenizer | metric | baseline | new | delta | rule | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = "" if r.delta is None else f"{r.delta:+.4g}"
        mark = {"REGRESSION": "❌ REGRESSION", "missing": "❌ missing", "better": "✅ better", "ok": "ok"}.get(r.verdict, r.verdict)
        lines.append(f"| {md(r.tokenizer)} | {md(r.metric)} | {fmt(r.old)} | {fmt(r.new)} | {delta} | {r.rule} | {mark} |")
    return head + "\n".join(lines) + "\n\n" + RULES + "\n" + "".join(f"\n{md(n)}\n" for n in notes)


def has_regression(rows: list[Row]) -> bool:
    return any(r.verdict in ("REGRESSION", "missing") for r in rows)
