"""The plugin registry: clashes, failures, lookups (one test per hook: tests/test_hooks.py)."""
import dataclasses

import pytest

import tokzoo
from tokzoo import hookspecs
from tokzoo.errors import ConfigError, UnknownNameError
from tokzoo.registry import get_registry



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


def test_every_component_has_one_source_of_parameters_and_defaults():
    """A parameter's default lives in one place: the factory's signature (the schema is
    derived from it), or a dataclass given as config= to a factory without defaults."""
    import inspect

    checked = 0
    for comp in get_registry().list():
        assert comp.config is not None, f"{comp.kind} '{comp.name}' has no readable parameter schema"
        if comp.schema_source != "dataclass":
            assert comp.schema_source == "signature"
            continue
        target = comp.factory.__init__ if inspect.isclass(comp.factory) else comp.factory
        params = inspect.signature(target).parameters
        twice = [f.name for f in dataclasses.fields(comp.config)
                 if f.name in params and params[f.name].default is not inspect.Parameter.empty]
        assert not twice, f"{comp.kind} '{comp.name}' ({comp.distribution}): defaults written twice: {twice}"
        checked += 1
    assert checked >= 3  # openclip and the recipes


def test_schema_derived_from_a_signature_validates_names_types_and_nested_specs():
    from tokzoo.config import load_run_config, schema_of

    schema = schema_of(get_registry().get("tokenizer", "semhitok").factory)
    defaults = {f.name: f for f in dataclasses.fields(schema)}
    assert defaults["semantic_codebook_size"].default == 24576
    assert defaults["decoder_ch_mult"].default_factory() == [1, 1, 2, 2, 4]
    assert schema.__nested_specs__ == {"teacher": "encoder"}
    with pytest.raises(ConfigError, match="did you mean 'sub_codebook_size'"):
        load_run_config("semhitok-tiny", ["model.sub_codebok_size=4"])
    with pytest.raises(ConfigError, match="sub_codebook_size"):
        load_run_config("semhitok-tiny", ["model.sub_codebook_size=four"])
    with pytest.raises(ConfigError, match="did you mean 'checkpoint'"):
        load_run_config("semhitok-tiny", ["model.teacher.checkpont=x"])
