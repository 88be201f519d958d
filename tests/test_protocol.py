"""The measurement protocol's fairness rules: the probe sees tokens only, every
mean carries a bootstrap interval, compare tells a change from noise."""
import json

import numpy as np
import pytest
import torch

from tokzoo.api import Codes, CodeSpec, Tokenizer, TokenizerInfo
from tokzoo.bench.compare import compare, to_markdown
from tokzoo.bench.metrics import EncoderProbe, LinearProbe, PSNR
from tokzoo.bench.stats import bootstrap_interval


class Palette(Tokenizer):
    """4x4 patches -> one of 8 grey levels; images of class c are brightness c."""

    def __init__(self):
        super().__init__()
        self._info = TokenizerInfo(16, CodeSpec("grid", {"code": 8}, (4, 4)))
        self.calls = []

    @property
    def info(self):
        return self._info

    def forward(self, images):
        raise NotImplementedError

    def encode(self, images):
        self.calls.append("encode")
        grey = torch.nn.functional.avg_pool2d(images.mean(1, keepdim=True), 4)[:, 0]
        return Codes({"code": (grey * 7.999).long()}, {"code": 8})

    def decode_codes(self, codes):
        g = codes.levels["code"].float() / 7
        return g.repeat_interleave(4, -1).repeat_interleave(4, -2)[:, None].expand(-1, 3, -1, -1)


class TokenPaletteFlat(Palette):
    token_features_kind = "one-hot codes"

    def token_features(self, codes):
        self.calls.append("token_features")
        return torch.nn.functional.one_hot(codes.levels["code"].flatten(1), 8).float()  # [B, N, 8]


class OldStyle(Palette):
    def probe_features(self, images):  # the first contract's hook
        return images.mean((2, 3))


def _context(train):
    from tokzoo.api import BenchContext

    return BenchContext(batch_size=8, probe_train_images=len(train), train_split=lambda: train)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = (labels.float()[:, None, None, None] / 4 + 0.1 + 0.02 * torch.rand(n, 3, 16, 16, generator=g))
    return [{"image": images[i], "label": labels[i], "caption": "", "index": i} for i in range(n)], images, labels


def _run(metric, tok, n=32):
    train, _, _ = _data(64, 0)
    _, images, labels = _data(n, 1)
    metric.setup(_context(train))
    metric.reset(tok)
    for s in range(0, n, 8):
        x = images[s:s + 8]
        metric.update(None, None, tok.encode(x), {"image": x, "label": labels[s:s + 8]})
    return metric.compute()


def test_the_probe_sees_features_of_the_codes_it_is_given():
    tok = TokenPaletteFlat()
    out = _run(LinearProbe(), tok)
    assert out["probe_top1"] == 1.0  # the grey level carries the class
    assert "token_features" in tok.calls


def test_a_tokenizer_without_token_features_is_unavailable_with_the_reason():
    with pytest.raises(NotImplementedError, match="Palette has no token_features"):
        _run(LinearProbe(), Palette())
    with pytest.raises(NotImplementedError, match=r"defines probe_features\(images\), which the contract replaced "
                                                   r"by token_features\(codes\)"):
        _run(LinearProbe(), OldStyle())
    with pytest.raises(NotImplementedError, match="has no encoder_features"):
        _run(EncoderProbe(), TokenPaletteFlat())


def test_the_encoder_probe_is_its_own_column():
    class WithEncoder(TokenPaletteFlat):
        def encoder_features(self, images):
            return images

    out = _run(EncoderProbe(), WithEncoder())
    assert set(out) == {"probe_encoder_top1"} and out["probe_encoder_top1"] == 1.0


def test_the_probe_gives_per_image_correctness_for_its_interval():
    probe = LinearProbe()
    _run(probe, TokenPaletteFlat(), n=32)
    v = probe.per_image_values()["probe_top1"]
    assert v.shape == (32,) and set(v.tolist()) <= {0.0, 1.0}


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    v = rng.normal(20.0, 2.0, size=2000)
    lo, hi = bootstrap_interval(v)
    se = v.std(ddof=1) / np.sqrt(len(v))
    assert lo < v.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert bootstrap_interval(v[::-1]) == (lo, hi)  # order-free
    assert bootstrap_interval([3.0]) is None and bootstrap_interval([1.0, 1.0]) == (1.0, 1.0)


def test_psnr_keeps_per_image_values_across_processes():
    m = PSNR()
    m.reset()
    a = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    m.update(a[:2], b[:2])
    other = PSNR()
    other.reset()
    other.update(a[2:], b[2:])
    gathered = [m.per_image_values()["psnr"], other.per_image_values()["psnr"]]

    def gather(parts, obj):
        parts[:] = gathered

    m.reduce(lambda t: t.add_(other.state[[k for k, v in m.state.items() if v is t][0]]), gather, 2)
    assert m.per_image_values()["psnr"].shape == (4,)
    assert m.compute()["psnr"] == pytest.approx(float(m.per_image_values()["psnr"].mean()))


def _results(psnr, interval, rfid=10.0, probe=0.5):
    e = {"metrics": {"psnr": psnr, "rfid": rfid, "probe_top1": probe},
         "better": {"psnr": "higher", "rfid": "lower", "probe_top1": "higher"}, "resolution": 32}
    if interval is not None:
        e["intervals"] = {"psnr": [psnr - interval, psnr + interval]}
    return {"protocol": {"version": 2}, "tokenizers": {"t": e}}


def _verdicts(tmp_path, new, old, tolerance=None):
    (tmp_path / "n.json").write_text(json.dumps(new))
    (tmp_path / "o.json").write_text(json.dumps(old))
    rows = compare(tmp_path / "n.json", tmp_path / "o.json", tolerance)
    return {r.metric: (r.verdict, r.rule) for r in rows}, to_markdown(rows)


def test_compare_without_tolerances_uses_the_noise_band(tmp_path):
    # a 0.5 dB drop: inside the band sqrt(0.4² + 0.4²) = 0.566, so not a regression (the default 0.1 would say so)
    v, md = _verdicts(tmp_path, _results(20.0, 0.4), _results(20.5, 0.4))
    assert v["psnr"] == ("ok", "noise ±0.566")
    v, _ = _verdicts(tmp_path, _results(19.9, 0.4), _results(20.5, 0.4))
    assert v["psnr"] == ("REGRESSION", "noise ±0.566")
    assert "noise band" in md and "default tolerance" in md  # the rules are said under the table
    # without intervals on both sides: the default tolerance, named
    v, _ = _verdicts(tmp_path, _results(20.0, None), _results(20.5, 0.4))
    assert v["psnr"] == ("REGRESSION", "default ±0.1")
    # an explicit tolerance wins over the band
    v, _ = _verdicts(tmp_path, _results(20.0, 0.4), _results(20.5, 0.4), "psnr=0.2")
    assert v["psnr"] == ("REGRESSION", "tolerance ±0.2")
    v, _ = _verdicts(tmp_path, _results(20.0, 0.4, rfid=12.0), _results(20.5, 0.4), "psnr=1,rfid=25%")
    assert v["psnr"] == ("ok", "tolerance ±1") and v["rfid"] == ("ok", "tolerance ±25%")


def test_compare_says_when_a_tokenizer_was_measured_on_other_data(tmp_path, cli):
    new, old = _results(20.0, 0.4), _results(20.0, 0.4)
    new["tokenizers"]["t"]["dataset"] = "imagefolder:aaaa:n=500:res=32"
    old["tokenizers"]["t"]["dataset"] = "imagefolder:bbbb:n=500:res=32"
    (tmp_path / "n.json").write_text(json.dumps(new))
    (tmp_path / "o.json").write_text(json.dumps(old))
    run = cli("compare", str(tmp_path / "n.json"), "--baseline", str(tmp_path / "o.json"),
              "--markdown", str(tmp_path / "c.md"))
    assert run.returncode == 0, run.stderr
    said = " ".join(run.stdout.split())
    assert "'t' was measured on other data than the baseline (imagefolder:aaaa:n=500:res=32 now" in said
    assert "was measured on other data" in (tmp_path / "c.md").read_text()
    from tokzoo.bench.compare import compare_results, data_notes
    from tokzoo.bench.report import render_html

    page = render_html(new, compare_rows=compare_results(new, old), compare_notes=data_notes(new, old))
    assert "&#x27;t&#x27; was measured on other data" in page
    old["tokenizers"]["t"]["dataset"] = new["tokenizers"]["t"]["dataset"]
    (tmp_path / "o.json").write_text(json.dumps(old))
    run = cli("compare", str(tmp_path / "n.json"), "--baseline", str(tmp_path / "o.json"))
    assert run.returncode == 0 and "other data" not in run.stdout
