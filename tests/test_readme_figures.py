"""The README's reproduction tables are copies of benchmarks/results/reproduce/results.json:
a number there that drifts from the committed results fails here."""
from __future__ import annotations

import json
import re

from conftest import REPO

README = (REPO / "README.md").read_text()
RESULTS = json.loads((REPO / "benchmarks" / "results" / "reproduce" / "results.json").read_text())["tokenizers"]


def table(header_start: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column titles, tokenizer -> cells) of the README table whose header row starts with ``header_start``."""
    lines = README.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    titles = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return titles[1:], rows


def number(cell: str) -> tuple[float, float | None]:
    """'**16.79** ± 0.19' -> (16.79, 0.19)."""
    found = re.findall(r"-?[0-9][0-9,]*\.?[0-9]*", cell.replace("**", ""))
    values = [float(x.replace(",", "")) for x in found]
    return values[0], (values[1] if len(values) > 1 and "±" in cell else None)


def check(titles, rows, keys):
    assert set(rows) == set(RESULTS), rows.keys()
    for name, cells in rows.items():
        e = RESULTS[name]
        for title, key in keys.items():
            shown, half = number(cells[titles.index(title)])
            digits = len(cells[titles.index(title)].replace("**", "").split("±")[0].strip().split(".")[-1]) \
                if "." in cells[titles.index(title)] else 0
            assert round(e["metrics"][key], digits) == shown, (name, key, e["metrics"][key], shown)
            if half is not None:
                lo, hi = e["intervals"][key]
                assert abs((hi - lo) / 2 - half) <= 0.5 * 10 ** -len(str(half).split(".")[-1]) + 1e-12, (name, key)


def test_the_reconstruction_table_is_the_committed_results():
    titles, rows = table("| tokenizer | PSNR | SSIM | probe top-1 (tokens)")
    check(titles, rows, {"PSNR": "psnr", "SSIM": "ssim", "probe top-1 (tokens)": "probe_top1"})


def test_the_ar_probe_table_is_the_committed_results():
    titles, rows = table("| tokenizer | AR NLL (bits/image)")
    check(titles, rows, {"AR NLL (bits/image)": "ar_nll_bits", "bits/token": "ar_nll_bits_per_token",
                         "class bits": "ar_class_bits",
                         "gen class acc": "gen_class_acc", "judge on real": "judge_top1",
                         "gFD (judge)": "gfd_judge", "AR-feature probe": "ar_probe_top1"})


def test_the_unified_table_is_the_committed_results():
    titles, rows = table("| tokenizer | PSNR | probe top-1 | VQA mean |")
    keys = {"PSNR": "psnr", "probe top-1": "probe_top1", "VQA mean": "vqa_top1", "AR NLL (bits/image)": "ar_nll_bits"}
    keys.update({q: f"vqa_{q}" for q in ("shape", "colour", "outline", "size", "position", "background")})
    check(titles, rows, keys)
    for name, cells in rows.items():  # bits per image: the tokenizer's own
        assert number(cells[titles.index("bits/image")])[0] == RESULTS[name]["metrics"]["bits_per_image"], name
    text = json.loads((REPO / "benchmarks" / "results" / "reproduce" / "text" / "results.json").read_text())
    for name, cells in rows.items():  # the text columns: the reproduction's text bench
        e = text["tokenizers"][name]
        for title, key in (("text T-ACC", "text_acc"), ("text T-NED", "text_ned")):
            cell = cells[titles.index(title)]
            shown, half = number(cell)
            digits = len(cell.replace("**", "").split("±")[0].strip().split(".")[-1])
            assert round(e["metrics"][key], digits) == shown, (name, key)
            if half is not None:
                lo, hi = e["intervals"][key]
                assert round((hi - lo) / 2, 2) == half, (name, key)


def test_the_token_ids_table_is_the_committed_results():
    ids = json.loads((REPO / "benchmarks" / "results" / "reproduce" / "vqa-ids" / "results.json").read_text())
    titles, rows = table("| tokens read as ids |")
    assert rows
    for row, cells in rows.items():
        name, first = row.removesuffix(" (first level)"), row.endswith(" (first level)")
        e = ids["tokenizers"][name]
        for q in ("shape", "colour", "outline", "size", "position", "background", "mean"):
            key = ("vqa_first_" if first else "vqa_") + ("top1" if q == "mean" else q)
            shown, _ = number(cells[titles.index(q)])
            digits = len(cells[titles.index(q)].replace("**", "").split("±")[0].strip().split(".")[-1])
            assert round(e["metrics"][key], digits) == shown, (row, q)


def test_the_performance_table_is_the_committed_benchmark_outputs():
    """Each 'now' figure of the README's performance table is the one its committed output prints."""
    results = REPO / "benchmarks" / "results"
    titles, rows = table("| what | before | now |")
    now = {name: cells[titles.index("now")] for name, cells in rows.items()}
    startup = (results / "startup.txt").read_text()
    for cmd, row in (("--help", "`tokzoo --help`"), ("list", "`tokzoo list`"), ("plugins", "`tokzoo plugins`"),
                     ("train vq-tinyy", "a mistyped preset (`tokzoo train vq-tinyy`)")):
        line = next(x for x in startup.splitlines()[::-1] if x.startswith(cmd + " "))
        before, after = re.findall(r"([0-9.]+) s", line)[:2]
        assert (rows[row][0], now[row]) == (f"{before} s", f"{after} s"), row
    first, cached = re.search(r"= ([0-9.]+)x first run, ([0-9.]+)x", (results / "harness.txt").read_text()).groups()
    assert now["bench vs PNG dump + torchmetrics + torch-fidelity, first run"] == f"{first}x"
    assert now["the same, reference statistics cached"] == f"{cached}x"
    median = re.search(r"median ([0-9.]+)", (results / "trainer_overhead.txt").read_text()).group(1)
    assert now["trainer / bare PyTorch loop (vq-tiny)"] == median
    quant = (results / "quantizers.txt").read_text()
    for search, row in (("sghc-end-to-end-196608", "SGHC search / its matrix-product bound"),
                        ("flat-16384", "flat VQ (16,384 codes) / its bound")):
        ratio = re.search(re.escape(search) + r" / matmul\S+\s+([0-9.]+)x", quant).group(1)
        assert now[row] == f"{ratio}x", row
    # the SGHC lookup paragraph: its times and peaks are the file's forward rows
    fwd = {m.group(1): (float(m.group(2)), float(m.group(3)))
           for m in re.finditer(r"^(\S+(?: \(partial\))?)\s+fwd\s+([0-9.]+)\s+([0-9.]+)$", quant, re.M)}
    flat = " ".join(README.split())
    sghc, full, vq = fwd["sghc-end-to-end-196608"], fwd["flat-196608"], fwd["flat-16384"]
    assert (f"{sghc[0]:,.0f} ms for the 196,608-entry" in flat and f"against {full[0]:,.0f} ms for a flat" in flat
            and f"and {vq[0]:,.0f} ms for a flat 16,384-code" in flat), "SGHC lookup times"
    assert f"peak memory {sghc[1]:.0f} MB vs {full[1]:.0f} MB and {vq[1]:.0f} MB" in flat
    assert f"is {fwd['sghc-sub-codebook-only (partial)'][0]:.1f} ms" in flat


def test_the_text_probe_figures_are_the_committed_bench():
    """The README's text-ocr findings are copies of benchmarks/results/reproduce/text/results.json."""
    text = json.loads((REPO / "benchmarks" / "results" / "reproduce" / "text" / "results.json").read_text())["tokenizers"]
    flat = " ".join(README.split())
    ceiling = {round(e["metrics"]["text_acc_ceiling"], 2) for e in text.values()}
    assert len(ceiling) == 1 and f"reads **{ceiling.pop():.2f}** of the original words" in flat
    assert all(e["metrics"]["text_acc"] == 0 for e in text.values()) and "**0** of any tokenizer's" in flat
    for name, e in text.items():
        assert f"{name} {e['metrics']['text_ned']:.3f}" in flat, name
