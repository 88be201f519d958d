"""The real entry-point path, through the `tokzoo` command in a subprocess."""
import re

import pytest

import tokzoo
from tokzoo.api import Codes

from conftest import docs_section, install_docs_plugin, make_dist
from conftest import REPO



def _docs_plugin_source() -> str:
    doc = (REPO / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    return blocks[0]  # the worked example's module


def test_fresh_install_lists_first_party_plugins(cli):
    out = cli("plugins")
    assert out.returncode == 0, out.stderr
    assert "tokzoo-semhitok" in out.stdout and "tokzoo-baselines" in out.stdout
    assert "0.1.0" in out.stdout


def test_tokzoo_plugins_none_loads_no_entry_points(cli):
    out = cli("plugins", env={"TOKZOO_PLUGINS": "none"})
    assert out.returncode == 0
    assert "tokzoo-semhitok" not in out.stdout and "tokzoo-baselines" not in out.stdout
    assert "tokzoo" in out.stdout


def test_docs_example_plugin_is_found_through_its_entry_point(cli, tmp_path):
    src = _docs_plugin_source()
    make_dist(tmp_path, "tokzoo-sign", "0.3.0", {"sign": "tokzoo_sign"}, {
        "tokzoo_sign/__init__.py": src,
        "tokzoo_sign/configs/sign-tiny.yaml": "inherit: vq-tiny\nmodel:\n  quantizer: {name: sign, dim: 10}\n",
    })
    env = {"PYTHONPATH": str(tmp_path)}
    out = cli("list", "quantizer", env=env)
    assert out.returncode == 0, out.stderr
    assert "sign" in out.stdout and "tokzoo-sign" in out.stdout
    plugins = cli("plugins", env=env)
    assert re.search(r"sign\s.*tokzoo-sign\s.*0\.3\.0", plugins.stdout)
    presets = cli("list", "preset", env=env)
    assert "sign-tiny" in presets.stdout
    restricted = cli("list", "quantizer", env={**env, "TOKZOO_PLUGINS": "baselines"})
    assert "sign" not in restricted.stdout


def test_docs_example_quantizer_works(tmp_path):
    """The documented quantizer is real: codes round-trip through lookup."""
    import torch

    namespace: dict = {}
    exec(compile(_docs_plugin_source(), "docs_example", "exec"), namespace)
    q = namespace["SignQuantizer"](dim=6)
    feats = torch.randn(2, 6, 4, 4)
    out = q(feats)
    assert out.codes.levels["code"].max() < 64
    assert torch.equal(q.lookup(out.codes), out.quantized.detach())


def test_broken_plugin_is_reported_and_everything_else_works(cli, tmp_path):
    make_dist(tmp_path, "tokzoo-broken", "0.0.1", {"broken": "broken_plugin"},
              {"broken_plugin.py": "raise ImportError('needs libfoo 3.2')\n"})
    env = {"PYTHONPATH": str(tmp_path)}
    out = cli("plugins", env=env)
    assert out.returncode == 0, out.stderr
    assert "failed" in out.stdout and "ImportError: needs libfoo 3.2" in out.stdout
    assert "tokzoo-baselines" in out.stdout
    listed = cli("list", env=env)
    assert listed.returncode == 0 and "vq" in listed.stdout


def test_a_clash_disables_only_the_newcomer_and_everything_keeps_working(cli, tmp_path):
    plugin = ("import tokzoo\n@tokzoo.hookimpl\ndef tokzoo_register_quantizers(register):\n"
              "    register('vq', object, 'clash')\n")
    make_dist(tmp_path, "tokzoo-clash", "1.0", {"clash": "clash_plugin"}, {"clash_plugin.py": plugin})
    env = {"PYTHONPATH": str(tmp_path)}
    out = cli("list", "quantizer", env=env)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert re.search(r"vq\s.*tokzoo\s", out.stdout)
    plugins = cli("plugins", env=env)
    assert plugins.returncode == 0
    text = " ".join(plugins.stdout.split())
    assert "'tokzoo-clash'" in text and "'tokzoo'" in text and "disabled" in text


def test_misspelled_hook_and_plugin_names_get_a_clear_word(cli, tmp_path):
    plugin = ("import tokzoo\n@tokzoo.hookimpl\ndef tokzoo_register_quantizer(register):\n"
              "    register('q1', object, 'typo')\n")
    make_dist(tmp_path, "tokzoo-typo", "1.0", {"typo": "typo_plugin"}, {"typo_plugin.py": plugin})
    env = {"PYTHONPATH": str(tmp_path)}
    listed = cli("list", "quantizer", env=env)
    assert listed.returncode == 0
    assert "tokzoo_register_quantizer" in listed.stderr and "tokzoo_register_quantizers" in listed.stderr
    plugins = cli("plugins", env=env)
    assert "tokzoo_register_quantizers" in " ".join(plugins.stdout.split())
    wrong = cli("list", env={**env, "TOKZOO_PLUGINS": "baseline"})
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "'baseline'" in wrong.stderr and "baselines" in wrong.stderr


def test_a_plugin_calling_sys_exit_at_import_is_marked_failed(cli, tmp_path):
    make_dist(tmp_path, "tokzoo-exits", "1.0", {"exits": "exits_plugin"},
              {"exits_plugin.py": "import sys\nsys.exit(0)\n"})
    env = {"PYTHONPATH": str(tmp_path)}
    listed = cli("list", "preset", env=env)
    assert listed.returncode == 0 and "vq-tiny" in listed.stdout
    plugins = cli("plugins", env=env)
    assert "exits" in plugins.stdout and "failed" in plugins.stdout


def test_unknown_preset_answers_with_close_matches(cli):
    out = cli("train", "vq-tiyn")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "unknown preset 'vq-tiyn'" in out.stderr and "Did you mean 'vq-tiny'" in out.stderr
    assert "Valid preset names:" in out.stderr


def test_unknown_kind_in_list(cli):
    out = cli("list", "widget")
    assert out.returncode == 2 and "unknown component kind 'widget'" in out.stderr


def test_help_lists_the_subcommands(cli):
    out = cli("--help")
    assert out.returncode == 0
    for sub in ("plugins", "list", "train", "bench", "compare"):
        assert sub in out.stdout


def test_config_typo_on_the_command_line(cli, tmp_path):
    out = cli("train", "vq-tiny", "trainer.max_stepz=5", f"run_dir={tmp_path / 'r'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown config key 'trainer.max_stepz': did you mean 'max_steps'?" in " ".join(out.stderr.split())
    assert not (tmp_path / "r").exists()  # nothing started


def test_broken_checkpoint_on_the_command_line(cli, tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"\x00garbage")
    out = cli("bench", "--tokenizers", str(ck), "--out", str(tmp_path / "b"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "is corrupt or not a safetensors file" in " ".join(out.stderr.split())


def test_a_ready_made_tokenizer_from_the_docs_is_benched_not_trained(cli, tmp_path):
    code, preset = docs_section("## A ready-made tokenizer", "## The hooks")
    env = install_docs_plugin(tmp_path / "site", code, preset, "tokzoo-palette", "palette", "palette-32")
    train = cli("train", "palette-32", env=env, cwd=tmp_path)
    assert train.returncode == 2 and "nothing to train" in train.stderr and "Traceback" not in train.stderr
    assert not (tmp_path / "runs").exists()
    bench = cli("bench", "--tokenizers", "palette-32", "--num-images", "8", "--metrics", "psnr,ssim,codebook,probe",
                "--probe-train-images", "16", "--out", str(tmp_path / "bench"), env=env, cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    import json

    entry = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"]["palette-32"]
    assert entry["num_images"] == 8 and entry["metrics"]["psnr"] > 10
    # the probe runs on the example's token features and the result says how they were made
    assert "probe_top1" in entry["metrics"] and entry["unavailable"] == {}
    assert entry["token_features"] == "the codes' palette colours"


def test_a_component_breaking_the_contract_is_named_without_a_traceback(cli, tmp_path):
    plugin = ("import torch, tokzoo\nfrom tokzoo.api import Quantizer\n"
              "class Plain(Quantizer):\n    layout = 'grid'\n    dim = 8\n"
              "    vocab = property(lambda self: {'code': 2})\n"
              "    def forward(self, z):\n        return z  # a plain tensor: not a QuantizerOutput\n"
              "    def lookup(self, codes):\n        return None\n"
              "@tokzoo.hookimpl\ndef tokzoo_register_quantizers(register):\n    register('plain', Plain, 'broken')\n")
    make_dist(tmp_path / "site", "tokzoo-plain", "0.4.0", {"plain": "plain_plugin"}, {"plain_plugin.py": plugin})
    env = {"PYTHONPATH": str(tmp_path / "site")}
    args = ["train", "vq-tiny", "model.quantizer={name: plain}", "recipe.steps=2", "data.train_size=8",
            "data.val_size=4", "trainer.batch_size=4", f"run_dir={tmp_path / 'run'}"]
    out = cli(*args, env=env, cwd=tmp_path)
    assert out.returncode == 3 and "Traceback" not in out.stderr
    msg = " ".join(out.stderr.split())
    assert "quantizer 'plain'" in msg and "tokzoo-plain 0.4.0" in msg and "QuantizerOutput" in msg
    assert not (tmp_path / "run").exists()  # no half run folder that looks like a run
    debug = cli(*args, env={**env, "TOKZOO_DEBUG": "1"}, cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.paper  # 70 s (the AR and VQA probes' judge and GPTs): with the paper group, which CI runs
def test_the_1d_tokenizer_of_the_docs_trains_and_benches_from_outside(cli, tmp_path):
    import json

    import torch

    code, preset = docs_section("## A 1-D tokenizer", "## A continuous tokenizer")
    env = install_docs_plugin(tmp_path / "site", code, preset, "tokzoo-onedim", "onedim", "onedim-tiny")
    train = cli("train", "onedim-tiny", "recipe.steps=4", "data.train_size=64", "data.val_size=16",
                "trainer.eval_images=8", "trainer.batch_size=8", env=env, cwd=tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "codes used: code" in train.stdout
    bench = cli("bench", "--tokenizers", "onedim-tiny", "--num-images", "16", "--probe-train-images", "32",
                "--metrics", "psnr,codebook,probe,ar-probe,vqa-probe", "--out", str(tmp_path / "bench"),
                "metrics.ar-probe.steps=2", "metrics.ar-probe.train_images=32", "metrics.ar-probe.judge_steps=2",
                "metrics.vqa-probe.steps=2", "metrics.vqa-probe.train_images=32", env=env, cwd=tmp_path)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    e = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"]["onedim-tiny"]
    assert e["info"]["layout"] == "sequence" and e["info"]["token_grid"] == [32]
    assert e["info"]["tokens_per_image"] == 32 and e["info"]["bits_per_image"] == 32 * 8
    assert set(e["unavailable"]) <= {"gfid"}, e["unavailable"]  # gFID: its Inception file is not on this machine
    for key in ("psnr", "usage/code", "probe_top1", "ar_nll_bits", "vqa_top1"):
        assert key in e["metrics"], key
    assert e["metrics"]["ar_nll_bits"] / e["metrics"]["ar_nll_bits_per_token"] == pytest.approx(32)
    # from Python, in another folder: an exact round trip of the 32 ids
    import sys

    sys.path.insert(0, str(tmp_path / "site"))
    try:
        from tokzoo.registry import reset_registry

        reset_registry()
        tok = tokzoo.load_tokenizer(tmp_path / "runs" / "onedim-tiny")
        codes = tok.encode(torch.rand(2, 3, 32, 32))
        assert codes.layout == "sequence" and codes.levels["code"].shape == (2, 32) and codes.grid == (32,)
        ids = codes.token_ids()
        assert ids.shape == (2, 32)
        back = Codes.from_token_ids(ids, tok.info.codes)
        assert torch.equal(back.levels["code"], codes.levels["code"])
        assert torch.equal(tok.decode(ids), tok.decode(codes))
    finally:
        sys.path.remove(str(tmp_path / "site"))
        reset_registry()


def test_the_dataset_and_metric_of_the_docs_install_and_run_from_outside(cli, tmp_path):
    """docs/plugins.md's worked dataset and metric, installed as a distribution, benched
    beside the docs' ready-made tokenizer from another folder; their reduction = one process."""
    import json
    import sys

    import torch

    doc = (REPO / "docs" / "plugins.md").read_text()
    section = doc[doc.index("## Data and a metric of your own"):doc.index("## The hooks")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    palette, preset = docs_section("## A ready-made tokenizer", "## A 1-D tokenizer")
    env = install_docs_plugin(tmp_path / "site", palette, preset, "tokzoo-palette", "palette", "palette-32")
    make_dist(tmp_path / "site", "tokzoo-stripes", "0.1.0", {"stripes": "tokzoo_stripes"},
              {"tokzoo_stripes/__init__.py": code})
    show = cli("show", "detail", env=env, cwd=tmp_path)
    assert show.returncode == 0 and "floor" in show.stdout and "least detail" in show.stdout, show.stdout
    out = tmp_path / "bench"
    bench = cli("bench", "--tokenizers", "palette-32", "--data", "stripes", "data.size=64", "--num-images", "32",
                "--metrics", "psnr,detail,probe", "--probe-train-images", "64", "metrics.detail.floor=2",
                "--out", str(out), env=env, cwd=tmp_path)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    results = json.loads((out / "results.json").read_text())
    e = results["tokenizers"]["palette-32"]
    assert e["unavailable"] == {} and 0 < e["metrics"]["detail_kept"] and "detail_lowest" in e["metrics"]
    lo, hi = e["intervals"]["detail_kept"]
    assert lo <= e["metrics"]["detail_kept"] <= hi and "detail_lowest" not in e["intervals"]
    assert e["metrics"]["detail_lowest"] <= e["metrics"]["detail_kept"]
    assert results["protocol"]["metrics"]["detail"] == {"floor": 2.0}
    assert "stripes-v1-val-32-64-0" in json.dumps(results)  # the dataset's fingerprint names the images
    # in Python: the registry builds the dataset as the host does, and two shards merge into one process
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        from tokzoo.registry import get_registry, reset_registry
        from tokzoo.testing import merge_shards

        reset_registry()
        reg = get_registry()
        val = reg.create("dataset", "stripes", split="val", resolution=16, size=8)
        assert len(val) == 8 and val.num_classes == 4 and val[3]["attributes"]["colour"] in ("red", "green", "blue")
        x = torch.stack([val[i]["image"] for i in range(8)]).mul(255).round().to(torch.uint8)
        y = x // 2
        whole = reg.create("metric", "detail")
        whole.update(x, y, None, {})
        halves = [reg.create("metric", "detail") for _ in range(2)]
        halves[0].update(x[:5], y[:5], None, {})
        halves[1].update(x[5:], y[5:], None, {})
        merged = merge_shards(halves).compute()
        assert merged == pytest.approx(dict(whole.compute())) and merged["detail_kept"] == pytest.approx(0.5, abs=0.02)
    finally:
        sys.path.remove(str(tmp_path / "site"))
        reset_registry()


def test_the_multiscale_quantizer_of_the_docs_trains_and_benches_from_outside(cli, tmp_path):
    """#38: a VAR-style quantizer written from the docs, installed from outside: multi-scale
    codes with usage per scale, the probes' GPT on its 85 tokens, exact id round trips."""
    import json
    import sys

    import torch

    code, preset = docs_section("## Multi-scale token maps", "## A continuous tokenizer")
    env = install_docs_plugin(tmp_path / "site", code, preset, "tokzoo-bitscales", "bitscales", "bitscales-tiny")
    train = cli("train", "bitscales-tiny", "recipe.steps=6", "data.train_size=64", "data.val_size=16",
                "trainer.eval_images=8", "trainer.batch_size=8", env=env, cwd=tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "codes used: s1" in train.stdout
    bench = cli("bench", "--tokenizers", "bitscales-tiny", "--num-images", "16", "--probe-train-images", "32",
                "--metrics", "psnr,codebook,ar-probe", "--out", str(tmp_path / "bench"),
                "metrics.ar-probe.steps=2", "metrics.ar-probe.train_images=32", "metrics.ar-probe.judge_steps=2",
                env=env, cwd=tmp_path)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    e = json.loads((tmp_path / "bench" / "results.json").read_text())["tokenizers"]["bitscales-tiny"]
    assert e["info"]["layout"] == "multiscale" and e["info"]["scales"] == [[1, 1], [2, 2], [4, 4], [8, 8]]
    assert e["info"]["tokens_per_image"] == 85 and e["info"]["bits_per_image"] == 85 * 4
    assert all(0 < e["metrics"][f"usage/s{s}"] <= 1 for s in (1, 2, 4, 8))
    assert e["metrics"]["ar_nll_bits"] / e["metrics"]["ar_nll_bits_per_token"] == pytest.approx(85)
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        from tokzoo.registry import reset_registry

        reset_registry()
        tok = tokzoo.load_tokenizer(tmp_path / "runs" / "bitscales-tiny")
        codes = tok.encode(torch.rand(2, 3, 32, 32))
        ids = codes.token_ids()
        assert ids.shape == (2, 85) and codes.scales == ((1, 1), (2, 2), (4, 4), (8, 8))
        back = Codes.from_token_ids(ids, tok.info.codes)
        assert all(torch.equal(back.levels[k], codes.levels[k]) for k in codes.levels)
        assert torch.equal(tok.decode(ids), tok.decode(codes))
    finally:
        sys.path.remove(str(tmp_path / "site"))
        reset_registry()
