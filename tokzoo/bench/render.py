"""Every rendering of a results dict: the terminal table, results.md,
results.csv and the reconstruction grid picture, with one column order and
one number format."""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from tokzoo import textsafe
from tokzoo.latents import LatentSpec
from tokzoo.bench.stats import half_width
from tokzoo.bench.results import Results, short_names  # noqa: F401 (importable here)


SUMMARY = [("rFID", "rfid"), ("PSNR", "psnr"), ("SSIM", "ssim"), ("LPIPS", "lpips"), ("probe top-1", "probe_top1"),
           ("VQA top-1", "vqa_top1"), ("VQA 1st level", "vqa_first_top1"),
           ("AR bits", "ar_nll_bits"), ("AR bits/token", "ar_nll_bits_per_token"), ("class bits", "ar_class_bits"),
           ("gFID", "gfid"), ("gen acc", "gen_class_acc"), ("judge", "judge_top1"),
           ("judge recon", "judge_recon_top1"),
           ("gFD judge", "gfd_judge"), ("AR probe", "ar_probe_top1"), ("usage", "usage/"), ("perplexity", "perplexity/"),
           ("tokens", "tokens_per_image"),
           ("bits", "bits_per_image"), ("enc img/s", "encode_img_s"), ("dec img/s", "decode_img_s")]


SWEPT = "swept:"  # column key prefix of a sweep's values
VQA = "vqa_"  # the VQA probe's results: vqa_top1, vqa_<attribute>, vqa_<attribute>_chance (and vqa_first_...)


def vqa_breakdown(results: Results) -> tuple[list[str], list[tuple[str, str, dict[str, tuple]]]]:
    """The VQA probe per question: (attributes, rows), a row per tokenizer and
    view (all tokens; ``(first level)``): (row label, tokenizer key,
    {attribute or "top1": (accuracy, interval half-width or None, chance or None, flagged)})."""
    attrs: list[str] = []
    rows = []
    for name, e in results["tokenizers"].items():
        m, ci, flags = e["metrics"], e.get("intervals") or {}, e.get("flags") or {}
        for prefix, suffix in ((VQA, ""), (VQA + "first_", " (first level)")):
            if prefix + "top1" not in m:
                continue
            cells = {}
            for k, v in m.items():
                q = k[len(prefix):]
                if not k.startswith(prefix) or q.endswith("_chance") or (prefix == VQA and q.startswith("first_")):
                    continue
                cells[q] = (v, half_width(ci.get(k)), m.get(k + "_chance"), k in flags)
                if q != "top1" and q not in attrs:
                    attrs.append(q)
            rows.append((label(name, e) + suffix, name, cells))
    return attrs, rows


def vqa_cell(cell: tuple | None) -> str:
    """``0.93 ± 0.02 (0.13)``: accuracy, half the 95 % interval, chance in brackets."""
    if cell is None:
        return "n/a"
    v, h, chance, flagged = cell
    text = _fmt(v) + (f" ± {h:.2g}" if h is not None else "") + (f" ({chance:.2f})" if chance is not None else "")
    return text + (" †" if flagged else "")


def unavailable_by_reason(results: Results, name=None) -> dict[tuple[str, str], list[str]]:
    """(metric, why it is unavailable) -> the tokenizers it hit, named by ``name(key, entry)``
    (their results.json key, the one name, by default): one line per reason in every output instead of one per tokenizer."""
    out: dict[tuple[str, str], list[str]] = {}
    for n, e in results["tokenizers"].items():
        for m, why in (e.get("unavailable") or {}).items():
            out.setdefault((m, why), []).append(n if name is None else name(n, e))
    return out


def summary_cells(results: Results, intervals: bool) -> tuple[list[tuple[str, str]], dict[str, list[str]]]:
    """(columns, tokenizer -> cells) of the summary, without the columns no tokenizer has."""
    columns = summary_columns(results)
    cells = {name: _summary_cells(e, columns, intervals) for name, e in results["tokenizers"].items()}
    keep = [i for i in range(len(columns)) if any(c[i] != "n/a" for c in cells.values())]
    return [columns[i] for i in keep], {name: [c[i] for i in keep] for name, c in cells.items()}


def summary_columns(results: Results) -> list[tuple[str, str]]:
    """The table's columns: the core summary, then every other metric result
    (a plugin's metric, LPIPS-VGG, ...) in first-seen order."""
    covered = [key for _, key in SUMMARY]
    swept: list[str] = []  # a sweep's values first, as columns
    for e in results["tokenizers"].values():
        swept += [k for k in (e.get("swept") or {}) if k not in swept]
    extra: list[str] = []
    for e in results["tokenizers"].values():
        for k in e["metrics"]:
            if k.startswith(VQA) and k not in covered:  # per question: their own table (vqa_breakdown)
                continue
            if not any(k == c or (c.endswith("/") and k.startswith(c)) for c in covered) and k not in extra:
                extra.append(k)
    present = [(t, k) for t, k in SUMMARY]
    return [(k, SWEPT + k) for k in swept] + present + [(k, k) for k in extra]


def _summary_cells(e: dict[str, Any], columns=None, intervals: bool = False) -> list[str]:
    """One row's cells; with ``intervals``, a mean's bootstrap 95 % half-width as ``± h``."""
    m = e["metrics"]
    cells = []
    for _, key in columns or SUMMARY:
        if key.startswith(SWEPT):
            v = (e.get("swept") or {}).get(key[len(SWEPT):])
            cells.append("n/a" if v is None else str(v))
        elif key.endswith("/"):
            parts = [f"{k[len(key):]} {_fmt(v)}" for k, v in m.items() if k.startswith(key)]
            cells.append(", ".join(parts) if parts else "n/a")
        else:
            cell = _fmt(m.get(key))
            h = half_width((e.get("intervals") or {}).get(key)) if intervals else None
            if h is not None and cell != "n/a":
                cell += f" ± {h:.2g}"
            if key in (e.get("flags") or {}) and cell != "n/a":
                cell += " †"  # a flagged number: the reason is printed with the table
            cells.append(cell)
    return cells


def _columns(results: Results) -> list[str]:
    order = ["rfid", "psnr", "ssim", "lpips", "probe_top1", "ar_nll_bits", "gfid", "gen_class_acc", "gfd_judge"]
    cols: list[str] = []
    for e in results["tokenizers"].values():
        for k in e["metrics"]:
            if k not in cols:
                cols.append(k)
    rest = sorted(c for c in cols if c not in order)
    return [c for c in order if c in cols] + rest


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}"


#: how every output marks a continuous tokenizer's row (a reference, not a discrete competitor): its layout
CONTINUOUS = LatentSpec.layout


def is_continuous(e: dict[str, Any]) -> bool:
    """Whether the entry ``e`` is a continuous tokenizer's (latents, no discrete codes)."""
    return (e.get("info") or {}).get("layout") == CONTINUOUS


def continuous_note(results: Results) -> str:
    """The line every output prints under a table holding continuous rows ('' without)."""
    names = [n for n, e in results["tokenizers"].items() if is_continuous(e)]
    if not names:
        return ""
    return (f"({CONTINUOUS}) {', '.join(names)}: a continuous tokenizer (latents, no discrete codes), a reference "
            "row, not a discrete competitor: its probe reads the latents, and what needs codes (codebook usage, "
            "bits, the AR and VQA probes) is n/a.")


def label(name: str, e: dict[str, Any]) -> str:
    """A tokenizer's name, marked when it is continuous, flagged when a pretrained part of it was random."""
    parts = e.get("random_parts") or []
    if e.get("swept"):  # a sweep's point: its folder's name (the swept values) is unique in the sweep
        name = Path(name).name
    name = f"{name} ({CONTINUOUS})" if is_continuous(e) else name
    name = f"{name} (RANDOM {', '.join(parts)})" if parts else name
    return f"{name} (unfinished: {e['unfinished']})" if e.get("unfinished") else name


#: which summary columns a narrow terminal keeps first (the rest are in results.md)
NARROW_PRIORITY = ("PSNR", "SSIM", "rFID", "LPIPS", "probe top-1", "VQA top-1", "AR bits", "gen acc", "class bits", "gFID",
                   "gFD judge", "tokens", "bits", "AR probe", "judge", "AR bits/token", "enc img/s", "dec img/s",
                   "VQA 1st level", "usage", "perplexity")


def skip_lines(results: Results) -> list[str]:
    """'tokenizer: k unreadable images skipped, n measured (first: why)' for every entry that skipped some."""
    out = []
    for n, e in results["tokenizers"].items():
        k = e.get("skipped_images") or 0
        if k:
            first = (e.get("skipped") or [""])[0]
            out.append(f"{n}: {k} unreadable image(s) skipped, {e.get('num_images')} measured"
                       + (f" (first: {first})" if first else ""))
    return out


def flag_lines(results: Results, keys: set[str] | None = None) -> list[str]:
    """'tokenizer / metric: why' for every flagged number (of ``keys`` when given)."""
    return [f"{n} / {k}: {why}" for n, e in results["tokenizers"].items()
            for k, why in (e.get("flags") or {}).items() if keys is None or k in keys]


def precision_note(results: Results) -> str:
    """How the tokenizers ran when not in fp32 (``--precision``), said in every output; '' for fp32."""
    from tokzoo.bench.protocol import protocol_value

    prec = protocol_value(results.get("protocol") or {}, "precision") or {}
    if prec.get("name", "fp32") == "fp32":
        return ""
    how = f"{prec.get('autocast')} autocast" if prec.get("autocast") else "float32"
    return (f"precision {prec.get('name')}: the tokenizers' encode and decode ran in {how}"
            f"{' (TF32 matmuls on a GPU)' if prec.get('tf32') else ''}: not comparable with fp32 results")


def as_sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def render_table(results: Results, width: int | None = None) -> Table:
    """The terminal table; given a ``width``, the columns that fit it, most
    important first, and a caption naming the ones left to results.md."""
    columns, rows = summary_cells(results, intervals=False)  # no empty columns
    keep = list(range(len(columns)))
    names = {name: label(name, e) for name, e in results["tokenizers"].items()}
    dropped: list[str] = []
    if width:
        def need(i: int) -> int:
            return max([len(columns[i][0])] + [len(r[i]) for r in rows.values()]) + 3

        used = max([len("tokenizer")] + [len(n) for n in names.values()]) + 4
        order = sorted(keep, key=lambda i: -1 if columns[i][1].startswith(SWEPT) else
                       NARROW_PRIORITY.index(columns[i][0]) if columns[i][0] in NARROW_PRIORITY
                       else len(NARROW_PRIORITY))
        chosen = []
        for i in order:
            if used + need(i) <= width:
                chosen.append(i)
                used += need(i)
        dropped = [columns[i][0] for i in keep if i not in chosen]
        keep = [i for i in keep if i in chosen]
    notes = [f"not shown at this width: {', '.join(dropped)} (see results.md)"] if dropped else []
    shown = {columns[i][1] for i in keep}
    notes += [continuous_note(results)] if continuous_note(results) else []
    notes += [precision_note(results)] if precision_note(results) else []
    notes += ["† " + line for line in flag_lines(results, shown)]
    notes += ["skipped: " + line for line in skip_lines(results)]
    esc = textsafe.console  # names, swept values and reasons print as the text they are
    table = Table(title="tokzoo bench", caption=esc("\n".join(notes), keep="\n") or None)
    table.add_column("tokenizer")
    for i in keep:
        table.add_column(esc(columns[i][0]), justify="right")
    for name in results["tokenizers"]:
        table.add_row(esc(names[name]), *[esc(rows[name][i]) for i in keep])
    return table


#: what a number means where a reader may misread it: shown under the tables (results.md, report.html)
#: when any entry has the result
READING = {
    "ar_class_bits": "AR class bits = NLL(null class) - NLL(true class) per image: the bits the class saves the "
                     "GPT in predicting the tokens. About 0: the tokens do not tell the class apart; negative: the "
                     "class-conditioned prediction is worse than the unconditioned one (on small data, within its "
                     "interval, no class information rather than harm).",
    "vqa_top1": "VQA chance: the accuracy of always giving the train split's most frequent answer, scored on the "
                "measured images; it can fall below 1/k when that answer is rarer among them.",
}


def reading_notes(results: Results) -> list[str]:
    """The :data:`READING` lines for the results present."""
    present = {k for e in results["tokenizers"].values() for k in e.get("metrics", {})}
    return [line for key, line in READING.items() if key in present]


def render_markdown(results: Results) -> str:
    p = results.get("protocol") or {}
    columns, cells = summary_cells(results, intervals=True)
    lines = ["# tokzoo bench results", "",
             textsafe.md(f"Protocol v{p.get('version')}: {p.get('dataset')}, {p.get('num_images')} images, "
                         f"{(p.get('preprocessing') or {}).get('name')} "
                         f"v{(p.get('preprocessing') or {}).get('version')}, ") +
             "metrics on uint8 reconstructions; ± is half the bootstrap 95 % interval over the images "
             "(1,000 resamples); the probe uses features from the tokens alone."
             + (f" {textsafe.md(as_sentence(precision_note(results)))}." if precision_note(results) else ""), "",
             "| tokenizer | " + " | ".join(textsafe.md(t) for t, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    md = textsafe.md
    for name, e in results["tokenizers"].items():
        lines.append(f"| {md(label(name, e))} | " + " | ".join(md(c) for c in cells[name]) + " |")
    attrs, vqa = vqa_breakdown(results)
    if vqa:
        lines += ["", "Questions from the tokens (vqa-probe): accuracy per attribute ± half the 95 % interval, "
                  "in brackets the chance level (the train split's most frequent answer):", "",
                  "| tokenizer | " + " | ".join(md(a) for a in attrs) + " | mean |", "|---" * (len(attrs) + 2) + "|"]
        lines += [f"| {md(row)} | " + " | ".join(vqa_cell(cells.get(a)) for a in attrs)
                  + f" | {vqa_cell(cells.get('top1'))} |" for row, _, cells in vqa]
    refs = continuous_note(results)
    if refs:
        lines += ["", md(refs)]
    reading = reading_notes(results)
    if reading:
        lines += ["", "Reading the numbers:", ""] + [f"- {md(line)}" for line in reading]
    flagged = flag_lines(results)
    if flagged:
        lines += ["", "Flagged numbers (†):", ""] + [f"- {md(line)}" for line in flagged]
    skips = skip_lines(results)
    if skips:
        lines += ["", "Skipped as unreadable (the numbers are over the images measured):", ""] + [
            f"- {md(line)}" for line in skips]
    randoms = [(n, e["random_parts"]) for n, e in results["tokenizers"].items() if e.get("random_parts")]
    if randoms:
        lines += ["", "Measured with deliberately random pretrained parts (`pretrained: random`), not comparable with "
                  "real ones:", ""] + [f"- {md(n)}: {md(', '.join(parts))}" for n, parts in randoms]
    missing = unavailable_by_reason(results, name=label)
    if missing:
        lines += ["", "Unavailable:", ""] + [f"- {md(m)} for {md(', '.join(names))}: {md(why)}"
                                             for (m, why), names in missing.items()]
    return "\n".join(lines) + "\n"


def render_csv(results: Results) -> str:
    cols = _columns(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    spread = [c for c in cols if any(c in (e.get("intervals") or {}) for e in results["tokenizers"].values())]
    swept = [k for _, k in summary_columns(results) if k.startswith(SWEPT)]
    cell = textsafe.csv_cell  # every cell: text a spreadsheet would run as a formula stays text
    w.writerow([cell(c) for c in ["tokenizer", *[k[len(SWEPT):] for k in swept], *cols,
                                  *[f"{c}_{end}95" for c in spread for end in ("lo", "hi")], "random_parts", "flags",
                                  "layout", *(["precision"] if precision_note(results) else [])]])
    for name, e in results["tokenizers"].items():
        ci = e.get("intervals") or {}
        w.writerow([cell(c) for c in [
            name, *[(e.get("swept") or {}).get(k[len(SWEPT):], "") for k in swept],
            *[e["metrics"].get(c, "") for c in cols],
            *[(ci.get(c) or ["", ""])[i] for c in spread for i in (0, 1)], " ".join(e.get("random_parts") or []),
            "; ".join(f"{k}: {why}" for k, why in (e.get("flags") or {}).items()),
            (e.get("info") or {}).get("layout", ""),
            *([results["protocol"]["precision"]["name"]] if precision_note(results) else [])]])
    return buf.getvalue()


def row_key(name: str) -> str:
    return "originals" if name == "originals" else "tok:" + name


def grid_png(rows: dict[str, torch.Tensor], header: list[str] | None = None, continuous: Iterable[str] = ()) -> bytes:
    """One labelled row per entry of ``rows`` (the originals first, when there,
    then each tokenizer's images), ``header`` above the columns when given;
    the rows named in ``continuous`` marked so under their label."""
    from PIL import Image, ImageDraw

    names = list(rows)
    first = rows["originals"] if "originals" in rows else next(iter(rows.values()))
    n = len(first) if "originals" in rows else max(len(v) for v in rows.values())
    _, _, h, w = first.shape
    label_w, scale = 110, max(1, 96 // h)
    top = 14 if header else 0
    canvas = Image.new("RGB", (label_w + n * w * scale, top + len(names) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate((header or [])[:n]):
        draw.text((label_w + c * w * scale + 2, 1), text[:w * scale // 6], fill="black")
    marked = set(continuous)
    for r, name in enumerate(names):
        imgs = rows[name]
        for c in range(min(n, len(imgs))):
            tile = Image.fromarray(imgs[c].permute(1, 2, 0).numpy()).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + c * w * scale, top + r * h * scale))
        middle = top + r * h * scale + h * scale // 2
        draw.text((4, middle - 6 - (6 if name in marked else 0)), name[:18], fill="black")
        if name in marked:
            draw.text((4, middle + 2), f"({CONTINUOUS})", fill="dimgray")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
