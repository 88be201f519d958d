"""The plugin registry: clashes, failures, lookups (one test per hook: tests/test_hooks.py)."""
import dataclasses
from pathlib import Path

import pytest

import tokzoo
from tokzoo import hookspecs
from tokzoo.errors import ConfigError, UnknownNameError
from tokzoo.registry import get_registry

REPO = Path(__file__).resolve().parent.parent


def _plugin_for(hook_name, name, factory, description="a test component", config=None):
    class Plugin:
        pass

    def impl(register):
        register(name, factory, description, config=config) if hook_name != "tokzoo_register_presets" else register(name, factory)

    setattr(Plugin, hook_name, staticmethod(tokzoo.hookimpl(impl)))
    # pluggy validates argument names; expose the right signature
    return Plugin()


@dataclasses.dataclass
class _Params:
    size: int = 3


def _factory(size: int = 3):
    return ("built", size)


def test_every_hookspec_is_in_the_kind_table():
    declared = {n for n in dir(hookspecs) if n.startswith("tokzoo_")}
    assert declared == set(hookspecs.HOOK_KINDS)


def test_duplicate_name_disables_only_the_newcomer_naming_both_distributions():
    reg = get_registry()
    reg.add_plugin(_plugin_for("tokzoo_register_quantizers", "vq", _factory), "clash", "tokzoo-clash", "1.0")
    info = reg.plugins["clash"]
    assert not info.ok
    assert "quantizer 'vq'" in info.error and "'tokzoo'" in info.error and "'tokzoo-clash'" in info.error
    assert reg.get("quantizer", "vq").distribution == "tokzoo"  # core's vq still there


def test_a_misspelled_hook_is_reported_with_the_real_name():
    class Typo:
        @tokzoo.hookimpl
        def tokzoo_register_quantizer(self, register):  # missing "s"
            register("never", _factory)

    reg = get_registry()
    reg.add_plugin(Typo(), "typo", "tokzoo-typo", "1.0")
    (warning,) = reg.plugins["typo"].warnings
    assert "tokzoo_register_quantizer" in warning and "did you mean 'tokzoo_register_quantizers'" in warning


def test_plugin_whose_hook_raises_is_marked_failed():
    class Broken:
        @tokzoo.hookimpl
        def tokzoo_register_encoders(self, register):
            raise RuntimeError("weights folder missing")

    reg = get_registry()
    reg.add_plugin(Broken(), "broken", "tokzoo-broken", "0.1")
    info = reg.plugins["broken"]
    assert not info.ok and info.error == "hook failed: RuntimeError: weights folder missing"
    assert "conv" in reg.names("encoder") and "vq" in reg.names("quantizer")  # everything else still there
    assert not any(c.plugin == "broken" for c in reg.list())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as err:
        get_registry().get("quantizer", "vqq")
    assert "Did you mean 'vq'" in str(err.value)
    assert "Valid quantizer names: " in str(err.value) and ", vq" in str(err.value)


def test_create_validates_parameters():
    with pytest.raises(ConfigError) as err:
        get_registry().create("quantizer", "vq", codebok_size=10)
    assert "unknown config key 'codebok_size'" in str(err.value) and "'codebook_size'" in str(err.value)
    with pytest.raises(ConfigError, match="bad value for 'codebook_size'"):
        get_registry().create("quantizer", "vq", codebook_size="many")


def test_build_from_spec():
    q = get_registry().build("quantizer", {"name": "vq", "codebook_size": 16, "dim": 4})
    assert q.vocab == {"code": 16} and q.dim == 4
