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
    v = _run(LinearProbe(), TokenPaletteFlat(), n=32).per_image["probe_top1"]
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
    from tokzoo.testing import merge_shards

    a = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    whole = PSNR()
    whole.update(a, b)
    m, other = PSNR(), PSNR()
    m.update(a[:2], b[:2])
    other.update(a[2:], b[2:])
    result = merge_shards([m, other]).compute()
    assert result.per_image["psnr"].shape == (4,)
    assert torch.equal(result.per_image["psnr"], whole.compute().per_image["psnr"])
    assert result.values["psnr"] == pytest.approx(float(result.per_image["psnr"].mean()))


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
    assert "image-bootstrap 95 % band" in md and "default tolerance" in md  # the rules are said under the table
    # the baseline's interval alone: sqrt(2) h_old; the new side's alone is not trusted: the default, named
    v, _ = _verdicts(tmp_path, _results(20.0, None), _results(20.5, 0.4))
    assert v["psnr"] == ("ok", "noise ±0.566")
    v, _ = _verdicts(tmp_path, _results(20.0, 0.4), _results(20.5, None))
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


# -- a noise rule from data for every number ------------------------------------------------
def test_compare_uses_the_training_repeats_when_wider_than_the_image_noise(tmp_path):
    old, new = _results(20.5, 0.1), _results(20.0, 0.1)  # image noise ±0.141: a 0.5 dB drop is a regression ...
    v, _ = _verdicts(tmp_path, new, old)
    assert v["psnr"] == ("REGRESSION", "noise ±0.141")
    # ... unless three trainings of the recipe already spread that much: t(0.975, 2) * 0.2 * sqrt(2) = 1.22
    old["tokenizers"]["t"]["repeats"] = {"n": 3, "seeds": ["preset", 1, 2], "sd": {"psnr": 0.2}}
    v, md = _verdicts(tmp_path, new, old)
    assert v["psnr"] == ("ok", "repeats ±1.22 (n=3)") and "t(0.975, n-1)" in md
    # the larger of the two rules judges: a narrow spread leaves the image band in charge
    old["tokenizers"]["t"]["repeats"]["sd"]["psnr"] = 0.01
    assert _verdicts(tmp_path, new, old)[0]["psnr"] == ("REGRESSION", "noise ±0.141")
    # a spread that is not a number: the baseline file is refused, naming the field (round four: every field read
    # from a file is checked, never ignored)
    from tokzoo.errors import ConfigError

    old["tokenizers"]["t"]["repeats"]["sd"]["psnr"] = "wide"
    with pytest.raises(ConfigError, match="field 'repeats'"):
        _verdicts(tmp_path, new, old)


def test_a_change_the_good_way_is_never_a_regression_and_the_direction_is_shown(tmp_path):
    old, new = _results(20.0, 0.1, rfid=10.0), _results(25.0, 0.1, rfid=5.0)
    v, md = _verdicts(tmp_path, new, old)
    assert v["psnr"][0] == "better" and v["rfid"][0] == "better"
    assert "| psnr ↑ |" in md and "| rfid ↓ |" in md


def test_compare_tells_a_metric_not_asked_for_from_a_number_lost(tmp_path, cli):
    old, new = _results(20.0, 0.4), _results(20.0, 0.4)
    old["tokenizers"]["t"]["metrics"]["vqa_top1"] = 0.6
    old["tokenizers"]["t"]["better"]["vqa_top1"] = "higher"
    old["tokenizers"]["t"]["sources"] = {"psnr": "psnr", "rfid": "rfid", "probe_top1": "probe", "vqa_top1": "vqa-probe"}
    new["tokenizers"]["t"]["asked"] = ["psnr", "rfid", "probe"]  # the new bench did not ask for the VQA probe
    (tmp_path / "n.json").write_text(json.dumps(new))
    (tmp_path / "o.json").write_text(json.dumps(old))
    run = cli("compare", str(tmp_path / "n.json"), "--baseline", str(tmp_path / "o.json"),
              "--markdown", str(tmp_path / "c.md"))
    assert run.returncode == 0, run.stdout
    said = " ".join(run.stdout.split())
    assert "PASS" in said and "not compared: the new bench did not measure vqa-probe (the baseline did)" in said
    assert "did not measure vqa-probe" in (tmp_path / "c.md").read_text()
    new["tokenizers"]["t"]["asked"].append("vqa-probe")  # asked for, and the number is not there: lost
    (tmp_path / "n.json").write_text(json.dumps(new))
    run = cli("compare", str(tmp_path / "n.json"), "--baseline", str(tmp_path / "o.json"))
    assert run.returncode == 1 and "FAIL, 1 regression(s)" in run.stdout
    assert "vqa_top1 ↑" in run.stdout and "missing" in run.stdout


def _codebook(parts, vocab=64):
    """A CodebookUsage fed ``parts`` (lists of (codes [B,h,w], dataset indices)), one process each, gathered."""
    from types import SimpleNamespace

    from tokzoo.bench.metrics import CodebookUsage

    tok = SimpleNamespace(info=SimpleNamespace(vocab={"code": vocab}, codes=SimpleNamespace(layout="grid", level_positions=lambda level: 16)))
    shards = []
    for part in parts:
        m = CodebookUsage()
        m.reset_states()
        m.reset(tok)
        for codes, index in part:
            m.update(torch.zeros(len(codes), 3, 1, 1, dtype=torch.uint8), None,
                     Codes({"code": codes}, {"code": vocab}, "grid"), {"index": index})
        shards.append(m)
    from tokzoo.testing import merge_shards

    result = merge_shards(shards).compute()  # the codes are concatenated, not summed
    return result.values, result.intervals


def test_codebook_usage_gets_an_image_bootstrap_interval_the_same_in_one_process_or_several():
    g = torch.Generator().manual_seed(0)
    codes = (64 * torch.rand(96, 4, 4, generator=g) ** 3).long()  # uneven use: low codes common, high ones rare
    index = torch.arange(96)
    one_values, one = _codebook([[(codes[:48], index[:48]), (codes[48:], index[48:])]])
    # two processes, the second holding every other image, gathered in either order: the same numbers
    two_values, two = _codebook([[(codes[1::2], index[1::2])], [(codes[::2], index[::2])]])
    assert two_values == one_values and two == one
    for key in ("usage/code", "perplexity/code"):
        lo, hi = one[key]
        assert lo < one_values[key] < hi and (lo + hi) / 2 == pytest.approx(one_values[key]), key
    # fewer images: a wider interval
    _, few = _codebook([[(codes[:12], index[:12])]])
    assert few["perplexity/code"][1] - few["perplexity/code"][0] > one["perplexity/code"][1] - one["perplexity/code"][0]
    # a codebook every image uses whole: no image noise at all
    full = torch.arange(64).reshape(4, 4, 4).repeat(8, 1, 1)
    values, ci = _codebook([[(full, torch.arange(32))]])
    assert values["usage/code"] == 1.0 and ci["usage/code"] == (1.0, 1.0)


def test_rfid_interval_resamples_paired_features_and_survives_the_reference_cache(monkeypatch):
    import tokzoo.bench.fid as fid
    from tokzoo.bench.metrics import RFID, frechet_distance, resampled_fid

    g = np.random.default_rng(0)
    # the fast trace of the bootstrap equals the Frechet distance's sqrtm (fewer rows than dims, and more)
    for n, d in ((20, 50), (200, 50)):
        x, y = g.normal(size=(n, d)), g.normal(size=(n, d)) * 1.2 + 0.1
        fast = resampled_fid(torch.from_numpy(x), torch.from_numpy(y), torch.ones(n, dtype=torch.float64))
        ref = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
        assert fast == pytest.approx(ref, rel=1e-5)
    proj = torch.from_numpy(g.normal(size=(3 * 4, 2048)))
    # the value itself (scipy's sqrtm at 2048 dimensions, 12 s here) is checked against torch-fidelity elsewhere
    monkeypatch.setattr(fid, "frechet_distance", lambda m1, s1, m2, s2: float((m1 - m2) @ (m1 - m2)))

    def metric(resamples=20):
        m = RFID(resamples=resamples)
        m.features = lambda u8: (u8.double().flatten(1)[:, :12] / 255) @ proj  # a stand-in extractor
        m.reset()
        return m

    a = torch.from_numpy(g.integers(0, 256, (40, 3, 2, 2), dtype=np.uint8))
    b = torch.from_numpy(np.clip(a.numpy().astype(int) + g.integers(-60, 60, a.shape), 0, 255).astype(np.uint8))
    first = metric()
    for i in range(0, 40, 16):
        first.update(a[i:i + 16], b[i:i + 16], batch={"index": torch.arange(i, min(i + 16, 40))})
    result = first.compute()
    value, ci = result["rfid"], result.intervals["rfid"]
    assert ci[0] < value < ci[1]
    # the next bench of the same images takes the originals' side from the cache: the same interval
    again = metric()
    again.load_reference(first.reference_state())
    for i in (32, 16, 0):  # another order of the same images
        again.update(a[i:i + 16], b[i:i + 16], batch={"index": torch.arange(i, min(i + 16, 40))})
    result = again.compute()
    assert result["rfid"] == pytest.approx(value) and result.intervals["rfid"] == pytest.approx(ci)
    # other images than the cache holds: no interval rather than a wrong one
    other = metric()
    other.load_reference(first.reference_state())
    other.update(a[:16], b[:16], batch={"index": torch.arange(100, 116)})
    assert other.compute().intervals == {}
    off = metric(resamples=0)
    off.update(a, b, batch={"index": torch.arange(40)})
    assert off.compute().intervals == {} and off.protocol()["interval"]["resamples"] == 0
    with pytest.raises(ValueError, match="resamples"):
        RFID(resamples=-1)
