"""``tokzoo compare NEW.json --baseline OLD.json``: a regression table.

Each tokenizer x metric present in the baseline gets old, new, delta, the
metric's direction (declared by the metric, recorded in the results), a rule
and a verdict: ``ok`` within the rule, ``better`` / ``REGRESSION`` beyond it
(a change in the good direction is never a regression), ``missing`` when the
new results lack a number their bench was asked for, ``not measured`` when the
new bench did not ask for that metric at all (said under the table, not a
failure). The rule is, in order:

1. a tolerance given with ``--tolerance`` for that metric;
2. noise measured from data, the larger of
   - the image bootstrap: when both results carry a 95 % interval for the
     metric, a change counts only when ``|new - old| > sqrt(h_old² + h_new²)``,
     ``h`` being each interval's half-width (the 95 % interval of a difference
     of two independent estimates; conservative for the same images); when
     only the baseline carries one, ``sqrt(2) h_old``;
   - training repeats: when a result carries the sample standard deviation
     ``s`` of the metric over ``n`` trainings of the same recipe (other seeds:
     ``benchmarks/reproduce.py --repeats``), ``t(0.975, n-1) * s * sqrt(2)``,
     the 95 % band of the difference of two trainings;
3. the default tolerance of the metric's family (``DEFAULT_TOLERANCES``), for
   a number that has neither (``NO_NOISE_RULE`` says why).

Throughput is informational unless given a tolerance explicitly (shared
machines are noisy). Results measured under different protocols are
refused, naming the field that differs.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
import math
from dataclasses import dataclass

from tokzoo.bench.protocol import PROTOCOL_KEYS, protocol_value, same_metric_settings
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
#: why a metric may have no interval from data, so that its default tolerance judges it (when training
#: repeats are recorded, they give it a rule from data)
NO_NOISE_RULE = {
    "ar_nll_bits_per_token": "a ratio of two sums (bits over tokens), no per-image value",
    "gfd_judge": "a Fréchet distance of the judge's features; its bootstrap is not measured",
    "gfid": "rFID of generated samples; no pairing of images to resample",
}


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
    better: str | None = None  # "higher" | "lower": the metric's own direction; None: informational

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
        a, b = protocol_value(pn, key), protocol_value(po, key)
        if a != b:
            raise ProtocolMismatch(f"refusing to compare: the protocols differ in '{key}' "
                                   f"(new: {json.dumps(a)}, baseline: {json.dumps(b)})")
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


def match_names(new: Results, old: Results, pairs: list[list[str]] | None) -> tuple[Results, Results]:
    """(``new``, the baseline with its tokenizer OLD standing for NEW) for each
    ``--match NEW OLD``: a retrain, or a sweep point, compared with the baseline's
    tokenizer of another name. NEW may be a pattern (``'K=*'``): every new
    tokenizer it matches is compared with OLD (a sweep against a one-tokenizer
    baseline). Each name must exist on its side."""
    if not pairs:
        return new, old
    baseline, paired = dict(old["tokenizers"]), set()
    for pattern, base in pairs:
        names = [pattern] if pattern in new["tokenizers"] else [
            n for n in new["tokenizers"] if fnmatch.fnmatchcase(n, pattern)]
        for missing, have, side in (([] if names else [pattern], new["tokenizers"], "new results"),
                                    ([] if base in old["tokenizers"] else [base], old["tokenizers"], "baseline")):
            for name in missing:
                close = difflib.get_close_matches(name, list(have), n=1, cutoff=0.4)
                raise ConfigError(f"--match {pattern} {base}: '{name}' is not a tokenizer of the {side}"
                                  + (f". Did you mean '{close[0]}'?" if close else f" ({', '.join(have)})"))
        for n in names:
            baseline[n] = old["tokenizers"][base]
        paired.add(base)
    for base in paired - set(new["tokenizers"]):  # compared under the new names: not 'in the baseline only'
        baseline.pop(base)
    return new, {**old, "tokenizers": baseline}


def name_notes(new: Results, old: Results) -> list[str]:
    """The names compare could not pair, on each side (pair them with --match NEW OLD)."""
    only_new = [n for n in new["tokenizers"] if n not in old["tokenizers"]]
    only_old = [n for n in old["tokenizers"] if n not in new["tokenizers"]]
    out = []
    if only_new:
        out.append("not in the baseline, so not compared: " + ", ".join(only_new))
    if only_old:
        out.append("in the baseline only (its rows are 'missing' or 'not measured'): " + ", ".join(only_old))
    if only_new and only_old:
        out.append("the same tokenizer under two names? pair them: tokzoo compare ... --match NEW_NAME BASELINE_NAME")
    return out


def _tolerance(metric: str, tol: dict[str, tuple[str, float]]) -> tuple[str, float] | None:
    if metric in tol:
        return tol[metric]
    family = metric.split("/")[0]
    if metric in INFORMATIONAL:
        return None
    return tol.get(family, ("abs", 0.0))


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def repeats_band(e: dict, metric: str) -> tuple[float, int] | None:
    """(the 95 % band of a difference of two trainings, repeats) from an entry's
    ``repeats`` (None when it records none for ``metric``)."""
    rep = e.get("repeats") or {}
    sd, n = (rep.get("sd") or {}).get(metric), rep.get("n")
    if not isinstance(sd, (int, float)) or not isinstance(n, int) or n < 2 or not math.isfinite(sd) or sd < 0:
        return None
    return t975(n - 1) * float(sd) * math.sqrt(2), n


def noise_band(metric: str, o: dict, n: dict) -> tuple[float, str] | None:
    """(band, rule) from data: the larger of the image bootstrap and the training repeats."""
    ho, hn = (half_width((e.get("intervals") or {}).get(metric)) for e in (o, n))
    found = []
    if ho is not None:  # the baseline's side alone: sqrt(2) h_old (never the new side's alone: it is not vetted)
        band = math.hypot(ho, hn) if hn is not None else math.sqrt(2) * ho
        found.append((band, f"noise ±{band:.3g}"))
    reps = [r for r in (repeats_band(o, metric), repeats_band(n, metric)) if r]
    if reps:
        band, k = max(reps)
        found.append((band, f"repeats ±{band:.3g} (n={k})"))
    return max(found, key=lambda f: f[0]) if found else None


def _allowed(metric: str, ov: float, o: dict, n: dict, explicit: dict, tol: dict) -> tuple[float, str] | None:
    """(the change that still counts as no change, the rule that says so), None: informational."""
    mine = explicit.get(metric) or explicit.get(metric.split("/")[0])
    if mine is None and metric not in INFORMATIONAL:
        rule = noise_band(metric, o, n)
        if rule is not None:
            return rule
    t = mine or _tolerance(metric, tol)
    if t is None:
        return None
    allowed = t[1] * abs(ov) if t[0] == "rel" else t[1]
    source = "tolerance" if mine else "default"
    return allowed, f"{source} ±{t[1] * 100:g}%" if t[0] == "rel" else f"{source} ±{t[1]:g}"


def not_asked(metric: str, o: dict, n: dict | None) -> str | None:
    """The metric that gave ``metric`` in the baseline, when the new bench did not ask for it."""
    source = (o.get("sources") or {}).get(metric)
    asked = (n or {}).get("asked")
    if n is None or source is None or asked is None:
        return None
    return source if source not in asked else None


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
            direction = better.get(metric)
            if nv is None:
                skipped = not_asked(metric, o, n)
                rows.append(Row(name, metric, ov, None, "not measured" if skipped else "missing",
                                f"{skipped} not asked for" if skipped else "", direction))
                continue
            rule = _allowed(metric, ov, o, n, explicit, tol)
            if direction is None or rule is None:
                rows.append(Row(name, metric, ov, nv, "info", "", direction))
                continue
            allowed, why = rule
            gain = (nv - ov) if direction == "higher" else (ov - nv)
            verdict = "ok" if abs(gain) <= allowed else ("better" if gain > 0 else "REGRESSION")
            rows.append(Row(name, metric, ov, nv, verdict, why, direction))
    measured = {m for side in (new, old) for e in side["tokenizers"].values() for m in e["metrics"]}
    for metric in sorted(set(explicit) - measured):  # a typo (psrn=2) would otherwise be ignored
        close = difflib.get_close_matches(metric, sorted(measured), n=1)
        raise ConfigError(f"--tolerance names '{metric}', which neither results file measured"
                          + (f". Did you mean '{close[0]}'?" if close else ""))
    if not any(r.new is not None for r in rows):  # PASS with nothing compared would read as a check passed
        raise ConfigError("nothing to compare: " + ("the baseline holds no tokenizer" if not old["tokenizers"]
                                                    else "no metric of the baseline was measured by the new results"
                                                    " for the same tokenizer names")
                          + "".join(f"\n{line}" for line in name_notes(new, old)))
    return rows


def fmt(v: float | None) -> str:
    """A compared number, as the table and report.html show it."""
    return "n/a" if v is None else f"{v:.4g}"


RULES = ("rules: 'tolerance' = given with --tolerance; 'noise' = outside the image-bootstrap 95 % band "
         "sqrt(h_old² + h_new²) of the two results' intervals (sqrt(2) h_old when only the baseline has one); 'repeats' = "
         "outside t(0.975, n-1) s sqrt(2), s the spread over n trainings of the recipe (the larger of the two "
         "is used); 'default' = the metric's default tolerance (no interval, no repeats). ↑ higher is better, "
         "↓ lower is better, as each metric declares; a change the good way is never a regression")
ARROWS = {"higher": "↑", "lower": "↓"}


def verdict_line(rows: list[Row]) -> str:
    regress = sum(r.verdict in ("REGRESSION", "missing") for r in rows)
    return f"FAIL, {regress} regression(s)" if regress else "PASS"


def rule_notes(rows: list[Row], old: Results | None = None) -> list[str]:
    """Why a row fell back to a default tolerance; a baseline without training repeats."""
    out = []
    defaults = sorted({r.metric for r in rows if r.rule.startswith("default")})
    if defaults:
        why = [f"{m} ({NO_NOISE_RULE.get(m, 'no interval on the baseline side, no training repeats')})" for m in defaults]
        out.append("judged by a default tolerance: " + "; ".join(why))
    if old is not None and not any((e.get("repeats") or {}).get("n") for e in old["tokenizers"].values()):
        out.append("the baseline records no training repeats: a retrained tokenizer may differ by more than "
                   "image noise (make the baseline with benchmarks/reproduce.py --repeats 3)")
    return out


def skipped_note(rows: list[Row]) -> list[str]:
    """One line naming the metrics the new bench did not ask for (not compared, not a failure)."""
    left = sorted({r.rule.split(" ")[0] for r in rows if r.verdict == "not measured"})
    if not left:
        return []
    return [f"not compared: the new bench did not measure {', '.join(left)} (the baseline did); "
            f"bench with those metrics to compare them ({sum(r.verdict == 'not measured' for r in rows)} rows)"]


def to_markdown(rows: list[Row], notes: list[str] = ()) -> str:
    head = f"**tokzoo compare: {verdict_line(rows)}**\n\n"
    lines = ["| tokenizer | metric | baseline | new | delta | rule | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.verdict == "not measured":
            continue  # one note under the table
        delta = "" if r.delta is None else f"{r.delta:+.4g}"
        mark = {"REGRESSION": "❌ REGRESSION", "missing": "❌ missing", "better": "✅ better", "ok": "ok"}.get(r.verdict, r.verdict)
        metric = f"{md(r.metric)} {ARROWS[r.better]}" if r.better in ARROWS else md(r.metric)
        lines.append(f"| {md(r.tokenizer)} | {metric} | {fmt(r.old)} | {fmt(r.new)} | {delta} | {r.rule} | {mark} |")
    notes = [*skipped_note(rows), *notes]
    return head + "\n".join(lines) + "\n\n" + RULES + "\n" + "".join(f"\n{md(n)}\n" for n in notes)


def print_rows(rows: list[Row], notes: list[str], out) -> None:
    """The table on a terminal (``out``: a rich Console): one block per tokenizer, the
    metric names whole, so it reads at 80 columns."""
    from rich.table import Table

    from tokzoo.textsafe import console as esc

    style = {"REGRESSION": "bold red", "missing": "bold red", "better": "green"}
    out.print(f"[bold]tokzoo compare: {verdict_line(rows)}[/]", highlight=False)
    for name in dict.fromkeys(r.tokenizer for r in rows):
        table = Table(title=esc(name), title_justify="left", title_style="bold", box=None, pad_edge=False)
        for col, kw in (("metric", {"no_wrap": True}), ("baseline", {"justify": "right"}), ("new", {"justify": "right"}),
                        ("delta", {"justify": "right"}), ("rule", {}), ("verdict", {"no_wrap": True})):
            table.add_column(col, **kw)
        for r in rows:
            if r.tokenizer != name or r.verdict == "not measured":
                continue
            metric = f"{esc(r.metric)} {ARROWS[r.better]}" if r.better in ARROWS else esc(r.metric)
            verdict = f"[{style[r.verdict]}]{r.verdict}[/]" if r.verdict in style else r.verdict
            table.add_row(metric, fmt(r.old), fmt(r.new), "" if r.delta is None else f"{r.delta:+.4g}", esc(r.rule),
                          verdict)
        if table.row_count:
            out.print(table)
    out.print(esc(RULES), highlight=False)
    for n in [*skipped_note(rows), *notes]:
        out.print(esc(n), highlight=False)


def has_regression(rows: list[Row]) -> bool:
    return any(r.verdict in ("REGRESSION", "missing") for r in rows)
