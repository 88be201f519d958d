"""Text a user controls, thrown at every writer: each output format's one
escaping rule (tokzoo.textsafe) holds for generated names, values and
reasons, and no writer raises."""
from __future__ import annotations

import csv
import io
import json
import re

from hypothesis import HealthCheck, given, settings, strategies as st
from rich.console import Console

from tokzoo import textsafe
from tokzoo.bench.compare import compare_results, print_rows, to_markdown
from tokzoo.bench.render import render_csv, render_markdown, render_table, short_names
from tokzoo.bench.plots import sweep_png, tradeoff_png
from tokzoo.bench.report import render_html

#: the pieces hostile text is made of: Markdown, HTML, CSV formulas, rich markup, math text, newlines
PIECES = ["|", "<script>alert(1)</script>", "&amp;", "\n", "\r", "=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)",
          "\t", "[/]", "[bold]", "[red]x[/red]", "$x^2$", "$", "\\", "`", "*", "a", "é", "名", " ",
          # terminal control sequences (clear the screen, retitle the terminal, an 8-bit CSI), a Markdown
          # image and link, and a file name's undecodable byte (Python's surrogate escape)
          "\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "![t](https://evil.example/t.png)", "[x](javascript:y)",
          "\udcff"]
#: a control character or an undecodable byte: never in any output
HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def live_markdown(text: str) -> bool:
    """Whether Markdown text (escapes removed) still holds a link or an image."""
    bare = re.sub(r"\\.", "", text)
    return "](" in bare or "![" in bare
hostile = st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join)


def results_with(names: list[str], reason: str, alias: str, value: str) -> dict:
    tokenizers = {}
    for i, n in enumerate(names):
        tokenizers[n] = {
            "metrics": {"psnr": 20.0 + i, "probe_top1": 0.5, "vqa_top1": 0.4, "vqa_colour": 0.5,
                        "vqa_colour_chance": 0.2, "usage/code": 0.9, "perplexity/code": 10.0},
            "intervals": {"psnr": [19.5 + i, 20.5 + i], "vqa_colour": [0.4, 0.6]},
            "better": {"psnr": "higher", "probe_top1": "higher", "vqa_top1": "higher"},
            "flags": {"psnr": reason}, "unavailable": {"rfid": reason}, "random_parts": [reason],
            "info": {"vocab": {"code": reason}, "bits_per_image": 64.0}, "swept": {alias: value},
            "unfinished": reason if i == 0 else None}
    return {"tokzoo_results": 1, "protocol": {"dataset": reason, "num_images": 8, "version": 9}, "tokenizers": tokenizers}


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile, min_size=1, max_size=3, unique=True), reason=hostile, alias=hostile, value=hostile)
def test_every_text_writer_keeps_its_format_whatever_the_names(names, reason, alias, value):
    res = results_with(names, reason, alias, value)
    # Markdown: every table row has the header's cells, user text never opens HTML or a new line
    md = render_markdown(res)
    assert "<script" not in md and not HIDDEN.search(md) and not live_markdown(md)
    md.encode("utf-8")
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| tokenizer |"))
    cells = unescaped_pipes(lines[head])
    for line in lines[head + 2:head + 2 + len(names)]:
        assert unescaped_pipes(line) == cells, line
    # compare's Markdown the same, and its terminal table prints the names as they are
    rows = compare_results(res, res)
    cmp = to_markdown(rows)
    assert not HIDDEN.search(cmp) and not live_markdown(cmp)
    for line in cmp.splitlines():
        if line.startswith("| "):
            assert unescaped_pipes(line) == 8, line
    term = io.StringIO()
    print_rows(rows, [], Console(file=term, width=200, color_system=None))
    assert not HIDDEN.search(term.getvalue())  # no ESC / CSI / OSC reaches a terminal: shown as \x1b
    for n in names:
        visible = " ".join(textsafe.visible(n).split())
        if visible and len(visible) < 20 and "[" in visible:
            assert visible.split()[0] in term.getvalue(), (n, term.getvalue())
    # CSV: one row per tokenizer, no cell a spreadsheet would run
    text = render_csv(res)
    assert not HIDDEN.search(text.replace("\r\n", "").replace("\n", ""))
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + len(names)
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "@", "\t", "\r") or (cell[:1] in "+-" and cell and not _number(cell)):
                raise AssertionError(f"formula cell {cell!r}")
    assert {r[0].removeprefix("'") for r in rows[1:]} == {textsafe.visible(n) for n in names}
    # HTML: no element from user text
    page = render_html(res)
    assert "<script" not in page and "[/]" not in page.replace(textsafe.html("[/]"), "")
    assert not HIDDEN.search(page.replace("\n", ""))
    page.encode("utf-8")
    # the terminal: rich prints the names as they are
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(render_table(res, width=200))
    printed = out.getvalue()
    assert not HIDDEN.search(printed)
    for n in short_names(names).values():  # as every output names them (a name with "/" is a path)
        visible = " ".join(textsafe.visible(n).split())
        if visible and len(visible) < 20:
            assert visible.split()[0] in printed, (n, printed)


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(hostile, min_size=2, max_size=3, unique=True), alias=hostile, value=hostile)
def test_plots_draw_user_text_as_text(names, alias, value):
    res = results_with(names, "why", alias, value)
    assert tradeoff_png(res)[:8] == b"\x89PNG\r\n\x1a\n"
    for i, e in enumerate(res["tokenizers"].values()):
        e["swept"] = {alias: f"{value}{i}", "other": "$y$"}
    assert sweep_png(res, [alias, "other"])[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_escaping_rules_themselves():
    assert textsafe.md("a|b<i>\nc") == "a\\|b&lt;i> c" and textsafe.md("N = 16 < 2048") == "N = 16 < 2048"
    assert textsafe.csv_cell("=1+2") == "'=1+2" and textsafe.csv_cell("-0.5") == "-0.5" and textsafe.csv_cell(-3) == -3
    assert textsafe.csv_cell("-cmd") == "'-cmd" and textsafe.csv_cell("plain") == "plain"
    assert textsafe.plot("$x$") == r"\$x\$"
    assert textsafe.html('"<a>"') == "&quot;&lt;a&gt;&quot;"
    out = io.StringIO()
    Console(file=out, color_system=None).print(textsafe.console("runs/[/]x/[bold]y"))
    assert out.getvalue().strip() == "runs/[/]x/[bold]y"
    json.dumps(results_with(["a"], "b", "c", "d"))  # the fixture itself is a results.json


def test_a_long_name_draws_without_a_wall_of_warnings(capfd):
    """A 200-character name once made adjustText log a line per iteration (1,438 on stderr)
    and matplotlib give up its layout; the label is cut on the plot (the tables keep it whole)."""
    import warnings

    res = results_with(["a" * 200, "b\n" * 30], "why", "x", "y")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert tradeoff_png(res)[:8] == b"\x89PNG\r\n\x1a\n"
    out, err = capfd.readouterr()
    assert not seen and not out and not err, (len(seen), err[:200])
