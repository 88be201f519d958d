"""What a person opens: tradeoff.png and report.html, the latter in a real headless Chromium."""
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from tokzoo.bench.plots import pareto, tradeoff_png, tradeoff_points
from tokzoo.bench.report import render_html
from conftest import REPO

ZOO = REPO / "benchmarks" / "results" / "zoo" / "results.json"
TINY = ["model.resolution=32", "data.resolution=32", "data.train_size=128", "data.val_size=32", "recipe.steps=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny tokenizers trained for two steps."""
    from tokzoo.config import load_run_config
    from tokzoo.train.trainer import Trainer

    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("a", []), ("b", ["model.quantizer.codebook_size=16"])):
        Trainer(load_run_config("vq-tiny", TINY + extra + [f"run_dir={root / name}"])).train()
    return {"a": root / "a", "b": root / "b"}


def test_pareto_frontier_keeps_the_points_nothing_beats():
    pts = [(10, 0.1), (12, 0.3), (11, 0.2), (15, 0.05), (9, 0.4), (12, 0.25)]
    assert pareto(pts, higher_x=True) == [4, 1, 3]  # (9,.4), (12,.3), (15,.05); ordered by x
    assert pareto([(1.0, 0.5), (2.0, 0.5)], higher_x=False) == [0]  # lower x better: equal y, smaller x wins
    assert pareto([(1.0, 0.5)], higher_x=True) == [0]


def _results(with_rfid=False):
    res = json.loads(ZOO.read_text())
    if with_rfid:
        for i, e in enumerate(res["tokenizers"].values()):
            e["metrics"]["rfid"] = 20.0 + 3 * i
            e["flags"] = {"rfid": "rank-deficient: N = 512 < 2048"}
    return res


def test_tradeoff_png_has_one_panel_per_axis_measured():
    from PIL import Image

    one = Image.open(io.BytesIO(tradeoff_png(_results())))
    two = Image.open(io.BytesIO(tradeoff_png(_results(with_rfid=True))))
    assert one.size[1] == two.size[1] and two.size[0] > 1.8 * one.size[0]  # PSNR; PSNR + rFID
    assert len(tradeoff_points(_results())) == len(_results()["tokenizers"])
    no_probe = _results()
    for e in no_probe["tokenizers"].values():
        e["metrics"].pop("probe_top1")
    assert tradeoff_png(no_probe) is None


def test_report_html_is_self_contained():
    res = _results()
    page = render_html(res, grid_png=(ZOO.parent / "recon_grid.png").read_bytes(), tradeoff=tradeoff_png(res))
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 2
    assert page.count("<tr><td>") >= len(res["tokenizers"]) * 2  # the results and usage tables


def _browser(profile: Path):
    """A headless Debian Chromium through selenium, or a skip (a failure when TOKZOO_REQUIRE_BROWSER=1, as in CI).
    Its profile lives in `profile` (the test's tmp_path), not in a /tmp folder Chromium would leave behind."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        if os.environ.get("TOKZOO_REQUIRE_BROWSER") == "1":
            pytest.fail("the report test needs Debian's chromium + chromium-driver and selenium (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver/selenium here (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def _check_page(browser, path: Path, rows: int, compare: bool) -> None:
    browser.get(path.as_uri())
    assert len(browser.find_elements("css selector", "#results tbody tr")) == rows
    for ident in ("tradeoff", "grid"):
        w, h = browser.execute_script(
            f"const i = document.getElementById('{ident}'); return [i.complete && i.naturalWidth, i.naturalHeight];")
        assert w > 100 and h > 100, ident
    if compare:
        assert len(browser.find_elements("css selector", "#compare tbody tr")) > 4
        assert "compare: PASS" in browser.find_element("tag name", "body").text
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_the_report_of_committed_results_renders_in_a_real_browser(tmp_path, cli):
    """`tokzoo report` on the zoo's committed results (11 tokenizers), compared with
    themselves: loads without console errors, one row per tokenizer, pictures decoded."""
    for f in ("results.json", "recon_grid.png"):
        shutil.copy2(ZOO.parent / f, tmp_path / f)
    run = cli("report", str(tmp_path), "--baseline", str(ZOO))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "tradeoff.png").is_file()
    browser = _browser(tmp_path)
    try:
        _check_page(browser, tmp_path / "report.html", len(_results()["tokenizers"]), compare=True)
    finally:
        browser.quit()


@pytest.mark.paper
def test_bench_report_renders_in_a_real_browser(trained, tmp_path, cli):
    """The report a bench writes: loads without console errors, one row per
    tokenizer, every picture decoded (non-zero natural size), compare rows shown."""
    out = tmp_path / "bench"
    names = f"{trained['a']},{trained['b']}"
    common = ["--tokenizers", names, "--num-images", "16", "--batch-size", "8", "--probe-train-images", "64",
              "--metrics", "psnr,ssim,codebook,probe,throughput"]
    run = cli("bench", *common, "--out", str(out))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for f in ("results.json", "results.md", "tradeoff.png", "report.html"):
        assert any(line.startswith(f) and line.rstrip().endswith(str(out / f)) for line in lines), f
    again = cli("report", str(out), "--baseline", str(out / "results.json"))  # the report with compare rows
    assert again.returncode == 0, again.stderr
    browser = _browser(tmp_path)
    try:
        _check_page(browser, out / "report.html", 2, compare=True)
    finally:
        browser.quit()
