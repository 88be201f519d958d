"""Configs: presets, overrides, validation that names the key and its closest spelling."""
import re

import pytest

from tokzoo.config import load_preset, load_run_config
from tokzoo.errors import ConfigError, UnknownNameError


def test_preset_loads_with_defaults_and_run_dir():
    cfg = load_run_config("vq-tiny")
    assert cfg["preset"] == "vq-tiny"
    assert cfg["trainer"]["batch_size"] == 16 and cfg["trainer"]["max_steps"] == -1
    assert cfg["run_dir"].endswith("vq-tiny")


def test_overrides_merge():
    cfg = load_run_config("vq-tiny", ["trainer.max_steps=50", "model.quantizer.codebook_size=64"])
    assert cfg["trainer"]["max_steps"] == 50
    assert cfg["model"]["quantizer"]["codebook_size"] == 64


def test_misspelled_top_level_key():
    with pytest.raises(ConfigError) as err:
        load_run_config("vq-tiny", ["trainr.max_steps=5"])
    assert str(err.value).startswith("unknown config key 'trainr': did you mean 'trainer'?")


def test_misspelled_nested_key():
    with pytest.raises(ConfigError) as err:
        load_run_config("vq-tiny", ["trainer.max_stepz=5"])
    assert "unknown config key 'trainer.max_stepz': did you mean 'max_steps'?" in str(err.value)


def test_misspelled_component_parameter():
    with pytest.raises(ConfigError) as err:
        load_run_config("vq-tiny", ["model.quantizer.codebok_size=5"])
    msg = str(err.value)
    assert "model.quantizer" in msg and "'codebok_size'" in msg and "did you mean 'codebook_size'?" in msg


def test_wrong_type():
    with pytest.raises(ConfigError) as err:
        load_run_config("vq-tiny", ["trainer.batch_size=lots"])
    assert "bad value for 'trainer.batch_size'" in str(err.value)


def test_unknown_component_name_in_config():
    with pytest.raises(UnknownNameError) as err:
        load_run_config("vq-tiny", ["model.quantizer.name=vqx"])
    assert "unknown quantizer 'vqx'" in str(err.value)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_run_config("vq-tiny", ["trainer.max_steps"])


def test_config_files_cannot_name_code(tmp_path):
    """An import-string key is just an unknown key: nothing is imported or run."""
    bad = tmp_path / "evil.yaml"
    bad.write_text("inherit: vq-tiny\nmodel:\n  _target_: os.system\n")
    with pytest.raises(ConfigError, match="unknown config key '_target_'"):
        load_run_config(str(bad))
    bad.write_text("inherit: vq-tiny\nmodel:\n  name: os.system\n")
    with pytest.raises(UnknownNameError, match="unknown tokenizer 'os.system'"):
        load_run_config(str(bad))


def test_inherit_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: b\n")
    (tmp_path / "b.yaml").write_text("inherit: a\n")
    import os

    os.environ["TOKZOO_CONFIG_PATH"] = str(tmp_path)
    try:
        with pytest.raises(ConfigError, match="inherits from itself"):
            load_preset("a")
    finally:
        del os.environ["TOKZOO_CONFIG_PATH"]


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_run_config(str(bad))


def test_a_spec_with_another_name_replaces_the_old_one():
    cfg = load_run_config("vilau-tiny", ["data={name: synthetic, resolution: 32}", "model.tower.arch=tiny"])
    assert cfg["data"] == {"name": "synthetic", "resolution": 32}  # shapes' `captions` is not carried over
    assert cfg["model"]["tower"]["checkpoint"] == "runs/clip"  # same name: keys merge as before
    same = load_run_config("vilau-tiny", ["data={name: shapes, resolution: 48}"])
    assert same["data"]["captions"] == "object" and same["data"]["resolution"] == 48



def test_config_values_are_never_interpolated():
    """Configs are plain data: ${...} stays text, and no resolver copies the environment into a run."""
    cfg = load_run_config("vqgan-tiny", ["run_dir=/tmp/x${oc.env:HOME}y", "data.captions=${model.name}"])
    assert cfg["run_dir"] == "/tmp/x${oc.env:HOME}y" and cfg["data"]["captions"] == "${model.name}"
    with pytest.raises(ConfigError, match="eval_images"):
        load_run_config("vqgan-tiny", ["trainer.eval_images=${trainer.batch_size}"])


def test_a_config_mistake_names_the_file_and_line_or_the_override_it_came_from(tmp_path, cli):
    from tokzoo.errors import UnknownNameError

    parent = tmp_path / "mine.yaml"
    parent.write_text("inherit: vq-tiny\nmodel:\n  quantizer: {name: vq, codebok_size: 64}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"inherit: {parent}\ntrainer:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=rf"unknown config key 'codebok_size'.*\(set in {re.escape(str(parent))}, line 3\)"):
        load_run_config(str(child))
    (tmp_path / "typo.yaml").write_text("inherit: vq-tiny\nmodel:\n  quantizer:\n    name: vqq\n")
    with pytest.raises(UnknownNameError, match=r"unknown quantizer 'vqq'(.|\n)*typo.yaml, line 4\)"):
        load_run_config(str(tmp_path / "typo.yaml"))
    run = cli("train", "vq-tiny", "trainer.max_stepz=3", f"run_dir={tmp_path / 'r'}")
    assert run.returncode == 2 and "(given on the command line as trainer.max_stepz=...)" in " ".join(run.stderr.split())
