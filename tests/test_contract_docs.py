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
                                         "trainable_groups", "frozen_prefixes",
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


def test_the_methods_a_metric_written_before_metric_result_keeps_are_the_ones_the_docs_name():
    from tokzoo.bench.measure import _LEGACY

    text = section("tokzoo_register_metrics")
    legacy = text[text.index("written before"):]
    assert all(f"`{m}()`" in legacy for m in _LEGACY.values()), sorted(_LEGACY.values())


def _public(cls) -> set[str]:
    """The names a class adds to the contract (not object's, not torch Dataset's)."""
    import torch

    inherited = set(dir(object)) | set(dir(torch.utils.data.Dataset))
    return {n for n in dir(cls) if not n.startswith("_") and n not in inherited} | (
        {n for n in ("__len__", "__getitem__") if n in cls.__dict__})


@pytest.mark.parametrize("names,where", [
    (lambda: _public(api.ImageDataset) - {"__len__", "__getitem__"}, "tokzoo_register_datasets"),
    (lambda: set(api.Sample.__annotations__), "tokzoo_register_datasets"),
    (lambda: _public(api.Metric), "tokzoo_register_metrics"),
    (lambda: {f for f in api.BenchContext.__dataclass_fields__ if not f.startswith("_")} - {"train_split"}
     | {n for n in dir(api.BenchContext) if not n.startswith("_") and callable(getattr(api.BenchContext, n))},
     "tokzoo_register_metrics"),
    (lambda: set(api.MetricResult.__dataclass_fields__), "tokzoo_register_metrics"),
], ids=["dataset", "sample", "metric", "context", "result"])
def test_every_public_attribute_the_host_reads_is_documented(names, where):
    text = section(where)
    missing = sorted(n for n in names() if f"`{n}" not in text and f"{n}(" not in text and f'"{n}"' not in text)
    assert not missing, f"docs/plugins.md's {where} section does not name {missing}"


def test_every_attribute_the_host_reads_from_a_dataset_is_declared_on_image_dataset():
    """getattr(<a dataset>, "name", ...) anywhere in tokzoo: the name is an ImageDataset attribute."""
    dataset_vars = {"val", "train", "data", "dataset", "train_set", "self.train_set", "images", "split"}
    read = set()
    for path in (REPO / "tokzoo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr" and len(node.args) >= 2
                    and ast.unparse(node.args[0]) in dataset_vars and isinstance(node.args[1], ast.Constant)):
                read.add((node.args[1].value, path.name))
    assert {n for n, _ in read} >= {"num_classes", "classes", "attributes", "same_for_every_split", "fingerprint"}
    undeclared = sorted((n, f) for n, f in read if not hasattr(api.ImageDataset, n))
    assert not undeclared, f"the host reads {undeclared} from a dataset; declare them on tokzoo.api.ImageDataset"


def test_the_cuda_against_cpu_bounds_of_docs_ci_are_the_ones_checked():
    from tokzoo.bench.protocol import DEVICE_AGREEMENT

    doc = (REPO / "docs" / "ci.md").read_text()
    rows = dict(re.findall(r"^\| (\w+)(?: \(each level\))? \| ([\d.]+)", doc, re.M))
    stated = {k: (float(v) / 100 if f"| {v} %" in doc and DEVICE_AGREEMENT[k][0] == "rel" else float(v))
              for k, v in rows.items() if k in DEVICE_AGREEMENT}
    assert stated == {k: bound for k, (_, bound) in DEVICE_AGREEMENT.items()}
