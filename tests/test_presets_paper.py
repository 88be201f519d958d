"""The paper-size presets end to end (marker ``paper``: make test-paper and CI), as
tests/test_presets_e2e.py runs every other preset: train one step per stage ->
``--resume`` -> move -> load elsewhere -> bench, on locally made stand-in weight
files of the real architectures (SigLIP ViT-L/16-256 and ViT-B/16-256 open_clip
files, the AlexNet LPIPS backbone, the FID Inception) and a folder laid out like
ImageNet. Files of their own (this one and test_presets_paper_semantic.py):
make test-paper spreads files over the cores (pytest-xdist --dist loadfile),
so the paper presets run on two workers, each making its stand-in weights."""
from __future__ import annotations

import os
import shutil

import pytest

from test_presets_e2e import NEEDS, PAPER, end_to_end, imagenet_like


@pytest.fixture(scope="module")
def paper_setup(tmp_path_factory):
    """Stand-in weight files at the real architectures, an ImageNet-like folder."""
    from tokzoo.testing import (make_alexnet_weights, make_hf_text_tokenizer, make_inception_weights,
                                make_openclip_weights)

    root = tmp_path_factory.mktemp("paper")
    weights = root / "weights"
    make_alexnet_weights(weights)
    make_inception_weights(weights)
    make_openclip_weights("ViT-B-16-SigLIP-256", weights)
    make_openclip_weights("ViT-L-16-SigLIP-256", weights)
    make_hf_text_tokenizer(weights / "siglip-tokenizer")
    data = imagenet_like(root / "imagenet")
    yield root, weights, data
    shutil.rmtree(root, ignore_errors=True)  # ~3.6 GB of stand-in weights: not kept past this module


#: the presets of this file; the semantic ones (their SigLIP towers: the longest) are in
#: tests/test_presets_paper_semantic.py, so two workers share the paper presets
PIXEL = ["vqgan", "fsq", "lfq"]
SEMANTIC = ["semhitok", "vilau"]


def this_turn(presets: list[str]) -> list[str]:
    """The presets of ``presets`` that run: all of them, or with TOKZOO_PAPER_TURN=N (CI: the
    commit count) only PAPER[N % 5], so that CI runs one paper-size preset per run, each in
    turn, and `make test-paper` all five (about 25 worker-minutes on a 2-core CPU)."""
    turn = os.environ.get("TOKZOO_PAPER_TURN", "").strip()
    if not turn:
        return presets
    if not turn.isdigit():
        raise pytest.UsageError(f"TOKZOO_PAPER_TURN must be a whole number, not {turn!r}")
    return [p for p in presets if p == PAPER[int(turn) % len(PAPER)]]


def test_the_two_files_cover_every_paper_preset(monkeypatch):
    assert sorted(PIXEL + SEMANTIC) == sorted(PAPER)
    # CI's turns: five runs in a row cover every paper-size preset once
    seen = []
    for n in range(100, 100 + len(PAPER)):
        monkeypatch.setenv("TOKZOO_PAPER_TURN", str(n))
        seen += this_turn(PIXEL) + this_turn(SEMANTIC)
    assert sorted(seen) == sorted(PAPER)
    monkeypatch.setenv("TOKZOO_PAPER_TURN", "x")
    with pytest.raises(pytest.UsageError, match="whole number"):
        this_turn(PIXEL)


@pytest.mark.paper
@pytest.mark.parametrize("preset", this_turn(PIXEL))
def test_paper_preset_end_to_end(preset, paper_setup, tmp_path, record_property):
    paper_preset_end_to_end(preset, paper_setup, tmp_path, record_property)


def paper_preset_end_to_end(preset, paper_setup, tmp_path, record_property):
    root, weights, data = paper_setup
    work = tmp_path / "work"
    work.mkdir()
    extra = [o.format(data=data, w=weights) for o in NEEDS[preset]]
    env = {"TOKZOO_WEIGHTS_DIR": str(weights)}
    timings: dict[str, float] = {}
    end_to_end(preset, work, extra, env, f"imagefolder:{data}", timings)
    files = ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(timings["checkpoint_mb"].items()))
    # shown in the run's summary (conftest), from whichever pytest-xdist worker ran it
    record_property("summary", f"{preset}: one step per stage {timings['one_step']:.0f} s (peak RSS of the CLI "
                    f"processes so far {timings['peak_rss_gb']:.1f} GB), train+resume {timings['train']:.0f} s, "
                    f"bench {timings['bench']:.0f} s; files: {files}")
