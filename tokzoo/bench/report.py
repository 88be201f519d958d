"""What a person looks at: a self-contained report (the pictures are drawn
by :mod:`tokzoo.bench.plots`).

- :func:`render_html`: ``report.html``, one file with no network access: the
  results table (with bootstrap intervals and flags), the trade-off plot and
  the reconstruction grid inlined as PNG data, codebook usage per level, the
  protocol block and, given a baseline, the compare rows.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from tokzoo import textsafe  # every user text through its HTML rule (control characters shown)
from tokzoo.bench.compare import (ARROWS, RULES, compare_results, data_notes, fmt, has_regression, load_results,
                                  rule_notes, skipped_note)
from tokzoo.bench.render import (as_sentence, continuous_note, flag_lines, label, precision_note, reading_notes,
                                 skip_lines, summary_cells, unavailable_by_reason, vqa_breakdown, vqa_cell)
from tokzoo.bench.plots import GENERATION, sweep_png, tradeoff_png
from tokzoo.bench.results import Results
from tokzoo.errors import TokzooError

# -- report.html ------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
.bar { display: inline-block; height: 10px; background: #4a7ebb; vertical-align: middle; margin-right: 6px; }
.acc { position: relative; display: inline-block; width: 80px; height: 10px; background: #eee;
       vertical-align: middle; margin-right: 6px; }
.acc .fill { position: absolute; left: 0; top: 0; height: 10px; background: #4a7ebb; }
.acc .chance { position: absolute; top: -3px; width: 2px; height: 16px; background: #b00020; }
.bad { color: #b00020; font-weight: bold; } .good { color: #2e7d32; } .note { color: #555; font-size: 13px; }
"""


def _img(png: bytes | None, ident: str, alt: str) -> str:
    if not png:
        return f'<p class="note">{textsafe.html(alt)}: not available.</p>'
    data = base64.b64encode(png).decode()
    return f'<img id="{ident}" alt="{textsafe.html(alt)}" src="data:image/png;base64,{data}">'


def _results_table(results: Results) -> str:

    columns, cells = summary_cells(results, intervals=True)  # no empty columns
    head = "".join(f"<th>{textsafe.html(title)}</th>" for title, _ in columns)
    rows = []
    for name, e in results["tokenizers"].items():
        tds = "".join(f"<td>{textsafe.html(c)}</td>" for c in cells[name])
        rows.append(f"<tr><td>{textsafe.html(label(name, e))}</td>{tds}</tr>")
    return (f'<table id="results"><thead><tr><th>tokenizer</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _usage_table(results: Results) -> str:
    rows = []
    for name, e in results["tokenizers"].items():
        m = e.get("metrics") or {}
        for key in sorted(k for k in m if k.startswith("usage/")):
            level = key[len("usage/"):]
            usage, ppl = m[key], m.get(f"perplexity/{level}")
            vocab = ((e.get("info") or {}).get("vocab") or {}).get(level)
            rows.append(f"<tr><td>{textsafe.html(name)}</td><td>{textsafe.html(level)}</td>"
                        f"<td>{textsafe.html(str(vocab)) if vocab is not None else 'n/a'}</td>"
                        f'<td><span class="bar" style="width:{max(0.0, min(1.0, usage)) * 120:.0f}px"></span>'
                        f"{usage:.3f}</td><td>{'n/a' if ppl is None else f'{ppl:.1f}'}</td></tr>")
    if not rows:
        return '<p class="note">No codebook statistics were measured.</p>'
    return ('<table id="usage"><thead><tr><th>tokenizer</th><th>level</th><th>codes</th><th>usage</th>'
            f"<th>perplexity</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _vqa_table(results: Results) -> str:
    """The VQA probe per question: accuracy as a bar, the chance level as a red tick on it."""
    attrs, rows = vqa_breakdown(results)
    if not rows:
        return ""

    def cell(c) -> str:
        if c is None:
            return "<td>n/a</td>"
        v, _, chance, _ = c
        tick = (f'<span class="chance" style="left:{max(0.0, min(1.0, chance)) * 80:.0f}px"></span>'
                if chance is not None else "")
        return (f'<td><span class="acc"><span class="fill" style="width:{max(0.0, min(1.0, v)) * 80:.0f}px"></span>'
                f"{tick}</span>{textsafe.html(vqa_cell(c))}</td>")

    head = "".join(f"<th>{textsafe.html(a)}</th>" for a in attrs)
    body = "".join(f"<tr><td>{textsafe.html(row)}</td>{''.join(cell(cells.get(a)) for a in attrs)}"
                   f"{cell(cells.get('top1'))}</tr>" for row, _, cells in rows)
    return ("<h2>Questions from the tokens (VQA probe)</h2>\n"
            '<p class="note">Accuracy per attribute, answered from the tokens alone, ± half the bootstrap 95 % '
            "interval; the red tick and the number in brackets: the chance level (the train split's most "
            "frequent answer).</p>\n"
            f'<table id="vqa"><thead><tr><th>tokenizer</th>{head}<th>mean</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _compare_table(rows, error: str | None) -> str:
    if error:
        return f'<p class="note">Not compared with the baseline: {textsafe.html(error)}</p>'
    if rows is None:
        return '<p class="note">No baseline given (<code>--baseline results.json</code>).</p>'

    out = []
    for r in rows:
        if r.verdict == "not measured":
            continue  # one note under the table
        cls = {"REGRESSION": "bad", "missing": "bad", "better": "good"}.get(r.verdict, "")
        delta = "" if r.delta is None else f"{r.delta:+.4g}"
        arrow = f" {ARROWS[r.better]}" if r.better in ARROWS else ""
        out.append(f"<tr><td>{textsafe.html(r.tokenizer)}</td><td>{textsafe.html(r.metric)}{arrow}</td>"
                   f"<td>{fmt(r.old)}</td><td>{fmt(r.new)}</td><td>{delta}</td><td>{textsafe.html(r.rule)}</td>"
                   f'<td class="{cls}">{textsafe.html(r.verdict)}</td></tr>')
    verdict = "FAIL" if has_regression(rows) else "PASS"
    return (f"<p><b>compare: {verdict}</b></p>"
            '<table id="compare"><thead><tr><th>tokenizer</th><th>metric</th><th>baseline</th><th>new</th>'
            f"<th>delta</th><th>rule</th><th>verdict</th></tr></thead><tbody>{''.join(out)}</tbody></table>"
            f'<p class="note">{textsafe.html(RULES)}</p>'
            + "".join(f'<p class="note">{textsafe.html(n)}</p>' for n in skipped_note(rows)))


def render_html(results: Results, grid_png: bytes | None = None, tradeoff: bytes | None = None,
                compare_rows=None, compare_error: str | None = None, title: str = "tokzoo bench report",
                compare_notes: list[str] = (),
                sweep: bytes | None = None, pictures: dict[str, bytes] | None = None) -> str:
    """The whole report as one HTML string (images inlined; no scripts, no network)."""

    p = results.get("protocol") or {}
    flags = flag_lines(results)
    notes = [f"<li>† {textsafe.html(line)}</li>" for line in flags]
    if continuous_note(results):
        notes.insert(0, f"<li>{textsafe.html(continuous_note(results))}</li>")
    notes += [f"<li>{textsafe.html(line)}</li>" for line in reading_notes(results)]
    notes += [f"<li>skipped: {textsafe.html(line)}</li>" for line in skip_lines(results)]
    notes += [f"<li>{textsafe.html(m)} unavailable for {textsafe.html(', '.join(names))}: {textsafe.html(why)}</li>"
              for (m, why), names in unavailable_by_reason(results).items()]
    kinds: dict[str, list[str]] = {}
    for n, e in results["tokenizers"].items():
        if e.get("token_features"):
            kinds.setdefault(e["token_features"], []).append(n)
    notes += [f"<li>probe features from the tokens, {textsafe.html(kind)}: {textsafe.html(', '.join(names))}</li>"
              for kind, names in kinds.items()]
    summary = (f"{textsafe.html(str(p.get('dataset')))}, {textsafe.html(str(p.get('num_images')))} images, "
               f"protocol v{textsafe.html(str(p.get('version')))}; ± is half the bootstrap 95 % interval over "
               "the images; the probe sees features computed from the tokens alone."
               + (f" <strong>{textsafe.html(as_sentence(precision_note(results)))}.</strong>"
                  if precision_note(results) else ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{textsafe.html(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>{CSS}</style></head>
<body>
<h1>{textsafe.html(title)}</h1>
<p>{summary}</p>
<h2>Results</h2>
{_results_table(results)}
<ul class="note">{''.join(notes)}</ul>
<h2>Understanding vs reconstruction{" and generation" if _has_generation(results) else ""}</h2>
{_img(tradeoff, "tradeoff", "trade-off plot")}
{"<h2>Sweep</h2>" + _img(sweep, "sweep", "sweep plot") if sweep else ""}
<h2>Reconstructions</h2>
<p class="note">First row: the originals; then one row per tokenizer.</p>
{_img(grid_png, "grid", "reconstruction grid")}
{_picture_sections(results, pictures)}
{_vqa_table(results)}
<h2>Codebook usage per level</h2>
{_usage_table(results)}
<h2>Compared with the baseline</h2>
{_compare_table(compare_rows, compare_error)}{"".join(f'<p class="note">{textsafe.html(n)}</p>' for n in compare_notes)}
<h2>Protocol</h2>
<pre id="protocol">{textsafe.html(json.dumps(p, indent=2))}</pre>
</body></html>
"""


def _has_generation(results: Results) -> bool:
    return any(k in (e.get("metrics") or {}) for e in results["tokenizers"].values() for k in GENERATION)


def _picture_sections(results: Results, pictures: dict[str, bytes]) -> str:
    """A section per metric picture (:meth:`Metric.images`): the AR probe's samples, a plugin's own."""
    out = []
    for picture, png in (pictures or {}).items():
        if picture == "samples":
            p = ((results.get("protocol") or {}).get("metrics") or {}).get("ar-probe") or {}
            how = (f"; cfg scale {p.get('cfg_scale')}, GPT {p.get('size')}, {p.get('steps')} steps, "
                   f"seed {p.get('seed')}") if p else ""
            out.append('<h2>Generated samples (AR probe)</h2>\n<p class="note">One row per tokenizer: a sample of '
                       'each of the first classes, in class order, decoded by the tokenizer itself'
                       f'{textsafe.html(how)}.</p>\n' + _img(png, "samples", "AR-probe samples, class by class"))
        else:
            out.append(f"<h2>{textsafe.html(picture)}</h2>\n" + _img(png, f"picture-{textsafe.html(picture)}", picture))
    return "\n".join(out)


def write_report(out: Path, results: Results, grid_png: bytes | None, baseline: str | None,
                 atomic_write, pictures: dict[str, bytes] | None = None) -> list[Path]:
    """tradeoff.png and report.html into ``out`` (written with ``atomic_write(path, data)``);
    returns the paths written."""

    written = []
    png = tradeoff_png(results)
    if png:
        atomic_write(out / "tradeoff.png", png)
        written.append(out / "tradeoff.png")
    aliases: list[str] = []
    for e in results.get("tokenizers", {}).values():
        aliases += [a for a in (e.get("swept") or {}) if a not in aliases]
    sweep = sweep_png(results, aliases) if aliases else None
    if sweep:
        atomic_write(out / "sweep.png", sweep)
        written.append(out / "sweep.png")
    rows, error, notes = None, None, []
    if baseline:
        try:
            old = load_results(baseline)
            rows = compare_results(results, old)
            notes = [*rule_notes(rows, old), *data_notes(results, old)]
        except TokzooError as exc:
            error = str(exc)
    atomic_write(out / "report.html", render_html(results, grid_png, png, rows, error, sweep=sweep,
                                                  compare_notes=notes, pictures=pictures))
    written.append(out / "report.html")
    return written
