"""The pictures of a bench: the trade-off (understanding against reconstruction
and generation, the Pareto frontier drawn) and a sweep's metric curves
(matplotlib, Agg backend). User text is drawn as text (tokzoo.textsafe),
and a number no axis can hold is left out."""
from __future__ import annotations

import io
import math
from typing import Any

from tokzoo.bench.render import CONTINUOUS, is_continuous
from tokzoo.bench.results import Results
from tokzoo.textsafe import plot as plot_text

PROBE = "probe_top1"
AXES = (("psnr", "PSNR (dB), higher is better", True), ("rfid", "rFID, lower is better", False),
        ("gfid", "gFID of AR-probe samples, lower is better", False),
        ("gfd_judge", "gFD, judge features (AR probe), lower is better", False))
#: the generation panel: gFID when measured, else the judge's Fréchet distance
GENERATION = ("gfid", "gfd_judge")


def pareto(points: list[tuple[float, float]], higher_x: bool) -> list[int]:
    """Indices of the points no other point beats on both probe (y, higher is
    better) and x (higher or lower is better), ordered along x."""
    sign = 1.0 if higher_x else -1.0
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any((sign * xo >= sign * x and yo >= y) and (sign * xo > sign * x or yo > y)
                     for j, (xo, yo) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def frontier(points: list[dict[str, Any]], key: str, ykey: str, higher_x: bool) -> list[int]:
    """Indices of ``points`` (:func:`tradeoff_points`) on the Pareto frontier of
    ``ykey`` against ``key``: among the discrete tokenizers only (a continuous
    one is a reference, drawn apart, never a competitor)."""
    discrete = [i for i, p in enumerate(points) if not p.get("continuous")]
    return [discrete[i] for i in pareto([(points[i][key], points[i][ykey]) for i in discrete], higher_x)]


#: the understanding axes: the linear probe, and the VQA probe's mean over questions when measured
UNDERSTANDING = (("probe", "linear-probe top-1 on tokens"), ("vqa", "VQA top-1 on tokens (mean over questions)"))
#: the text row (text-ocr): words read exactly from the reconstructions, beside the understanding rows
TEXT_ROW = ("text", "text kept: T-ACC (words read exactly)")


#: beyond this magnitude a number is left out of the pictures (a hand-edited 1e308 would break the axes)
PLOT_BOUND = 1e12


def _plottable(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= PLOT_BOUND


def tradeoff_points(results: Results) -> list[dict[str, Any]]:
    """One dict per tokenizer that has a probe or VQA result: name, probe, vqa, psnr, rfid, bits."""
    out = []
    for name, e in results.get("tokenizers", {}).items():
        m = e.get("metrics") or {}
        if m.get(PROBE) is None and m.get("vqa_top1") is None and m.get("text_acc") is None:
            continue
        v = {k: m.get(k) if _plottable(m.get(k)) else None for k in (PROBE, "vqa_top1", "psnr", "rfid", "gfid",
                                                                     "gfd_judge", "text_acc")}
        out.append({"name": name, "probe": v[PROBE], "vqa": v["vqa_top1"], "text": v["text_acc"],
                    "psnr": v["psnr"],
                    "rfid": v["rfid"], "gfid": v["gfid"], "gfd_judge": v["gfd_judge"],
                    "bits": m.get("bits_per_image") or (e.get("info") or {}).get("bits_per_image"),
                    "flags": e.get("flags") or {}, "continuous": is_continuous(e)})
    return out


def _quiet_glyphs(fn):
    """A plot of user text, drawn without a wall of warnings: a glyph the font lacks
    (CJK, a tab) draws as a box, without a warning per glyph; a label too long for
    its panel stays where it is, without adjustText's log line per iteration (over
    a thousand for one long name) or matplotlib's note that the layout gave up."""
    import functools
    import logging
    import warnings

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        log = logging.getLogger("adjustText")
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
                warnings.filterwarnings("ignore", message=r"constrained_layout not applied")
                warnings.filterwarnings("ignore", category=DeprecationWarning, module="adjustText")
                return fn(*args, **kwargs)
        finally:
            log.setLevel(level)

    return wrapper


#: a tokenizer's name on a plot is cut to this many characters (the tables give it whole)
PLOT_NAME_CHARS = 40


def _point_label(p: dict[str, Any], key: str) -> str:
    """A point's label on the panel of ``key``: its name cut to :data:`PLOT_NAME_CHARS`,
    a dagger when flagged there, then its bits per image (or that it is continuous)."""
    name = p["name"] if len(p["name"]) <= PLOT_NAME_CHARS else p["name"][:PLOT_NAME_CHARS - 1] + "…"
    if p["bits"]:
        return f"{name}{' †' if key in p['flags'] else ''} ({p['bits']:.0f} b)"
    return f"{name} ({CONTINUOUS})" if p["continuous"] else name


@_quiet_glyphs
def tradeoff_png(results: Results, title: str = "understanding vs reconstruction") -> bytes | None:
    """The trade-off picture as PNG bytes (a row of panels per understanding
    measure: the linear probe, the VQA probe); None when no tokenizer has both
    an understanding and a PSNR or rFID result."""
    from adjustText import adjust_text
    from matplotlib.figure import Figure

    pts = tradeoff_points(results)
    axes = [(key, label, hi) for key, label, hi in AXES if sum(p[key] is not None for p in pts) >= 1]
    if any(key == GENERATION[0] for key, _, _ in axes):  # one generation panel: gFID when there is one
        axes = [a for a in axes if a[0] not in GENERATION[1:]]
    rows = [(key, ylabel) for key, ylabel in (*UNDERSTANDING, TEXT_ROW) if any(p[key] is not None for p in pts)]
    if not pts or not axes or not rows:
        return None
    if rows == [TEXT_ROW] and title == "understanding vs reconstruction":
        title = "text kept vs reconstruction"
    if any(key in GENERATION for key, _, _ in axes) and title == "understanding vs reconstruction":
        title = "understanding vs reconstruction and generation"
    fig = Figure(figsize=(6.2 * len(axes), 4.8 * len(rows)), dpi=110, layout="constrained")
    bits = [p["bits"] for p in pts if p["bits"]]
    top = max(bits) if bits else 1.0
    for r, (ykey, ylabel) in enumerate(rows):
        for k, (key, xlabel, higher_x) in enumerate(axes):
            ax = fig.add_subplot(len(rows), len(axes), r * len(axes) + k + 1)
            mine = [p for p in pts if p[key] is not None and p[ykey] is not None]
            xy = [(p[key], p[ykey]) for p in mine]
            sizes = [40 + 360 * ((p["bits"] or top) / top) for p in mine]
            discrete = [i for i, p in enumerate(mine) if not p["continuous"]]
            front = frontier(mine, key, ykey, higher_x)
            colors = ["tab:red" if i in front else "tab:blue" for i in range(len(mine))]
            dots = ax.scatter([xy[i][0] for i in discrete], [xy[i][1] for i in discrete],
                              s=[sizes[i] for i in discrete], c=[colors[i] for i in discrete], alpha=0.6,
                              edgecolors="black", linewidths=0.6, zorder=3)
            refs = [i for i, p in enumerate(mine) if p["continuous"]]
            if refs:
                ax.scatter([xy[i][0] for i in refs], [xy[i][1] for i in refs], s=120, marker="D", facecolors="none",
                           edgecolors="dimgray", linewidths=1.2, zorder=3,
                           label=f"{CONTINUOUS} (latents, no codes): a reference")
            if len(front) > 1:
                ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], color="tab:red", lw=1.2, ls="--",
                        zorder=2, label="Pareto frontier")
            if len(front) > 1 or refs:
                ax.legend(loc="best", fontsize=8, frameon=False)
            if not higher_x:
                ax.invert_xaxis()  # better to the right on both panels
            ax.set_xlabel(xlabel + ("" if higher_x else " (axis reversed)"))
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.margins(0.18)
            texts = [ax.text(x, y, plot_text(_point_label(p, key)), fontsize=8,
                             bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
                     for p, (x, y) in zip(mine, xy)]
            if texts:  # labels moved apart so none hides another (adjustText), each tied to its point
                adjust_text(texts, x=[x for x, _ in xy], y=[y for _, y in xy], ax=ax,
                            **({"objects": dots} if discrete else {}), expand=(1.3, 1.6),
                            arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    fig.suptitle(f"{title}  (marker area: bits per image; red: on the frontier)", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


SWEEP_METRICS = (("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("rfid", "rFID"), ("lpips", "LPIPS"),
                 ("probe_top1", "probe top-1 on tokens"))


@_quiet_glyphs
def sweep_png(results: Results, aliases: list[str]) -> bytes | None:
    """A sweep's picture: per metric, the metric against the first swept value,
    one line per combination of the others, bootstrap 95 % intervals as error
    bars. None when the results hold no swept entries."""
    from matplotlib.figure import Figure

    entries = [e for e in results.get("tokenizers", {}).values() if e.get("swept")]
    metrics = [(k, t) for k, t in SWEEP_METRICS if any(k in e.get("metrics", {}) for e in entries)]
    if not entries or not metrics or not aliases:
        return None
    x_name, rest = aliases[0], aliases[1:]
    xs = sorted({e["swept"].get(x_name) for e in entries}, key=_order)
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in xs)
    lines: dict[tuple, list[dict]] = {}
    for e in entries:
        lines.setdefault(tuple(e["swept"].get(a) for a in rest), []).append(e)
    fig = Figure(figsize=(4.2 * len(metrics), 3.8), dpi=110, layout="constrained")
    for k, (key, title) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for combo, group in sorted(lines.items(), key=lambda kv: [_order(v) for v in kv[0]]):
            group = sorted((e for e in group if _plottable(e["metrics"].get(key))),
                           key=lambda e: _order(e["swept"].get(x_name)))
            if not group:
                continue
            x = [e["swept"][x_name] if numeric else xs.index(e["swept"][x_name]) for e in group]
            y = [e["metrics"][key] for e in group]
            ci = [(e.get("intervals") or {}).get(key) for e in group]
            err = [[yy - c[0] if c else 0 for yy, c in zip(y, ci)], [c[1] - yy if c else 0 for yy, c in zip(y, ci)]]
            name = plot_text(", ".join(f"{a}={v}" for a, v in zip(rest, combo))) or None
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [plot_text(x) for x in xs])
        else:
            ax.set_xticks(range(len(xs)), [plot_text(x) for x in xs])
        ax.set_xlabel(plot_text(x_name))
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if rest and k == 0:
            ax.legend(fontsize=8, frameon=False)
    fig.suptitle("sweep: " + plot_text(" x ".join(aliases)) + "  (error bars: bootstrap 95 % over images)", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _order(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
