"""The documented contract and the code agree (docs/plugins.md vs tokzoo/api.py)."""
import ast
import inspect
import re

import pytest

from tokzoo import api
from conftest import REPO

DOC = (REPO / "docs" / "plugins.md").read_text()
SECTIONS = {api.Encoder: "tokzoo_register_encoders", api.Quantizer: "tokzoo_register_quantizers",
            api.Decoder: "tokzoo_register_decoders", api.Tokenizer: "tokzoo_register_tokenizers",
            api.Metric: "tokzoo_register_metrics"}


def section(hook: str) -> str:
    return re.search(rf"### `{hook}`\n(.*?)(?=\n### |\n## )", DOC, re.S).group(1)


@pytest.mark.parametrize("base", list(SECTIONS), ids=lambda b: b.__name__)
def test_every_method_a_component_must_implement_is_documented(base):
    required = sorted(getattr(base, "__abstractmethods__", set()))
    text = section(SECTIONS[base])
    missing = [m for m in required if f"`{m}" not in text and f"{m}(" not in text]
    assert not missing, f"docs/plugins.md's {SECTIONS[base]} section omits {missing} (required by {base.__name__})"


@pytest.mark.parametrize("base", list(SECTIONS), ids=lambda b: b.__name__)
def test_every_optional_method_the_docs_name_exists(base):
    text = section(SECTIONS[base])
    named = set(re.findall(r"`(\w+)(?:\(|`)", text))
    public = {n for n in dir(base) if not n.startswith("_")}
    claimed = {n for n in named if n in {"token_features", "encoder_features", "token_features_kind",
                                         "per_image_values", "flags", "trainable_groups", "frozen_prefixes",
                                         "last_layer",
                                         "setup", "reset", "update", "reduce", "compute", "lookup", "encode",
                                         "decode_codes", "forward", "info", "vocab"}}
    assert claimed <= public | {"forward", "info", "vocab", "lookup", "encode", "decode_codes"}, claimed - public


def test_the_metric_update_signature_is_the_documented_one():
    sig = str(inspect.signature(api.Metric.update))
    assert sig == "(self, originals: 'Tensor', reconstructions: 'Tensor', codes: 'Codes', batch: 'dict') -> 'None'"
    assert "update(originals, reconstructions, codes, batch)" in DOC


def test_the_harness_treats_no_metric_by_name():
    """What probe and rFID need goes through declared Metric methods any plugin can use."""
    core = {"probe", "rfid", "lpips", "psnr", "ssim", "codebook", "throughput", "ar-probe", "vqa-probe"}
    used = []
    nodes = [n for room in ("harness.py", "measure.py")  # the loop and the one-tokenizer pass it calls
             for n in ast.walk(ast.parse((REPO / "tokzoo" / "bench" / room).read_text()))]
    for node in nodes:  # comparisons with, and lookups by, a metric's name
        if isinstance(node, (ast.Compare, ast.Subscript)):
            used += [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in core]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get":
            used += [c.value for c in node.args if isinstance(c, ast.Constant) and c.value in core]
    assert not used, used
