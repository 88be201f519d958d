"""The training loop as a GPU wants it, checked on the CPU.

- Between two log lines the host reads no tensor value: every call that would
  wait for a GPU (``item``, ``float()``, ``int()``, ``bool()``, ``tolist``,
  ``.cpu()``, ``.numpy()``, ``__index__``) is counted while the steps between
  two log lines run, for every first-party tokenizer, GAN and restarts on.
- What the trainer compiles (the tokenizer's training pass, the recipe's loss
  networks) traces with zero graph breaks under ``torch._dynamo.explain``; a
  plugin whose model breaks the graph still trains with ``trainer.compile``.
- DDP only searches for unused parameters where a stage says it needs to, and
  2 processes (gloo) give the numbers of 1 at the same global batch.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import free_port
from tokzoo.config import load_run_config
from tokzoo.data import collate
from tokzoo.train.recipe import StepContext
from tokzoo.train.trainer import Trainer

#: the tensor methods through which Python reads a value on the host (a GPU would be waited for)
HOST_READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist", "cpu", "numpy")
#: code that reads host tensors by design, never a device value: the loader's own CPU tensors, and the
#: optimisers' step counters (PyTorch keeps ``state["step"]`` on the CPU unless capturable, to avoid a sync)
HOST_SIDE = (os.sep + os.path.join("tokzoo", "data") + os.sep, os.path.join("torch", "utils", "data"),
             os.path.join("torch", "optim", "optimizer.py"))

SMALL = ["trainer.batch_size=4", "data.train_size=64", "data.val_size=16", "trainer.eval_images=8"]


@contextlib.contextmanager
def host_reads():
    """Count host reads of tensor values while ``counting[0]`` is true: (where, method) per call."""
    calls: list[tuple[str, str]] = []
    counting = [False]
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counted(name, fn):
        def wrapper(self, *args, **kwargs):
            if counting[0]:
                frame, stack = sys._getframe(1), []
                while frame is not None:
                    stack.append(frame)
                    frame = frame.f_back
                host_side = any(any(h in f.f_code.co_filename for h in HOST_SIDE) or
                                f.f_code.co_name == "captions_for" for f in stack)
                if not host_side:
                    f = stack[0]
                    calls.append((f"{f.f_code.co_filename}:{f.f_lineno} ({f.f_code.co_name})", name))
            return fn(self, *args, **kwargs)
        return wrapper

    for name, fn in saved.items():
        setattr(torch.Tensor, name, counted(name, fn))
    try:
        yield calls, counting
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _reads_between_log_lines(cfg: dict, log_every: int = 3) -> tuple[list, int]:
    """Train ``cfg``; the host reads made between consecutive log lines of one stage
    (the evaluation and checkpoint between stages left out), and how many such windows."""
    trainer = Trainer(cfg)
    original = trainer._log_step
    last: list = [None]
    windows = [0]
    found: list = []  # the reads made inside complete windows

    with host_reads() as (calls, counting):
        def logged(stage, meter, images):
            counting[0] = False
            here = (stage.name, trainer.stage_step)
            if last[0] is not None and last[0][0] == here[0] and here[1] - last[0][1] == log_every:
                windows[0] += 1  # the steps between two log lines of one stage (no evaluation, no checkpoint)
                found.extend(calls)
            calls.clear()
            out = original(stage, meter, images)
            last[0] = here
            counting[0] = True
            return out

        trainer._log_step = logged
        trainer.train()
    if found:
        raise AssertionError(f"host reads between two log lines: {dict(collections.Counter(found))}")
    return found, windows[0]


def _config(preset: str, run_dir: Path, *extra: str) -> dict:
    return load_run_config(preset, [*SMALL, "trainer.log_every=3", "trainer.ckpt_every=100",
                                    f"run_dir={run_dir}", *extra])


def test_vq_and_vqgan_steps_read_nothing_on_the_host(tmp_path):
    # restarts due every 2 steps and the GAN (adaptive weight) on from the first step: every path runs
    cfg = _config("vq-tiny", tmp_path / "vq", "recipe.steps=7", "model.quantizer.restart_unused=true",
                  "model.quantizer.restart_every=2", "trainer.ema_decay=0.9")
    calls, windows = _reads_between_log_lines(cfg)
    assert windows >= 1 and calls == []
    cfg = _config("vqgan-tiny", tmp_path / "vqgan", "recipe.steps=7", "recipe.disc_start=0")
    calls, windows = _reads_between_log_lines(cfg)
    assert windows >= 1 and calls == []


def test_semhitok_and_vilau_steps_read_nothing_on_the_host(tmp_path, tiny_teacher):
    cfg = _config("semhitok-tiny", tmp_path / "sem", f"model.teacher.checkpoint={tiny_teacher}",
                  "model.semantic_codebook_size=32", "model.restart_every=2", "recipe.stage1_steps=7",
                  "recipe.stage2_steps=7", "recipe.disc_start=0")
    calls, windows = _reads_between_log_lines(cfg)
    assert windows >= 2 and calls == []  # one window in each stage
    cfg = _config("vilau-tiny", tmp_path / "vilau", f"model.tower.checkpoint={tiny_teacher}", "recipe.steps=7",
                  "model.restart_every=2", "recipe.disc_start=0", "model.codebook_size=64")
    calls, windows = _reads_between_log_lines(cfg)
    assert windows >= 1 and calls == []


def test_the_counter_sees_a_host_read(tmp_path):
    """The sync counter itself: a recipe that reads its loss on the host every step is caught."""
    from tokzoo.testing import registered_plugin
    from tokzoo.train.recipes import ReconstructionRecipe
    import tokzoo

    class Chatty(ReconstructionRecipe):
        def generator_step(self, model, tokenizer, batch, ctx):
            res = super().generator_step(model, tokenizer, batch, ctx)
            float(res.loss.detach())  # what the old loop did for every term
            return res

    class Plugin:
        @tokzoo.hookimpl
        def tokzoo_register_recipes(self, register):
            register("chatty", Chatty, "reads its loss every step")

    with registered_plugin(Plugin(), "chatty"):
        cfg = _config("vq-tiny", tmp_path / "chatty", "recipe={name: chatty, steps: 7}")
        with pytest.raises(AssertionError, match="__float__"):
            _reads_between_log_lines(cfg)


# -- compile ----------------------------------------------------------------------------------------------------

def _explain_units(cfg: dict, stage_index: int = 0) -> dict[str, int]:
    """Graph breaks of each unit the trainer compiles: the tokenizer's training forward
    (the usage hook included) and every loss network of the recipe's stage."""
    trainer = Trainer(cfg)
    trainer._enter_stage(stage_index)
    stage = trainer.stages[stage_index]
    batch = trainer._to_device(collate([trainer.train_set[i] for i in range(4)]))
    trainer.tokenizer.train()
    breaks = {}
    torch._dynamo.reset()
    branch = {"branch": "semantic"} if stage.name == "semantic" else {}
    ex = torch._dynamo.explain(lambda x: trainer.tokenizer(x, **branch))(batch["image"])
    breaks["tokenizer"] = ex.graph_break_count
    for net in trainer.recipe.loss_networks():
        ex = torch._dynamo.explain(net.forward)(batch["image"])
        breaks[type(net).__name__] = ex.graph_break_count
    # the whole generator step too where it is pure tensor code (no text tower, no adaptive-weight autograd.grad)
    if cfg["model"]["name"] != "vilau":
        ctx = StepContext(10_000, 10_000, stage, stage_index, trainer.device)

        def step(x):
            return trainer.recipe.generator_step(trainer.tokenizer, trainer.tokenizer, {**batch, "image": x}, ctx).loss
        breaks["generator_step"] = torch._dynamo.explain(step)(batch["image"]).graph_break_count
    return breaks


@pytest.mark.paper  # about 20-30 s each: make test-paper (CI runs both)
def test_what_the_trainer_compiles_has_no_graph_break(tmp_path, tiny_teacher):
    gan = ["recipe.disc_start=0", "recipe.adaptive_disc_weight=false"]
    cases = {
        "vq-tiny": (_config("vq-tiny", tmp_path / "a", "model.quantizer.restart_unused=true"), 0),
        "vqgan-tiny": (_config("vqgan-tiny", tmp_path / "b", *gan), 0),
        "semhitok-tiny semantic": (_config("semhitok-tiny", tmp_path / "c", f"model.teacher.checkpoint={tiny_teacher}",
                                           *gan), 0),
        "semhitok-tiny pixel": (_config("semhitok-tiny", tmp_path / "d", f"model.teacher.checkpoint={tiny_teacher}",
                                        *gan), 1),
        "vilau-tiny": (_config("vilau-tiny", tmp_path / "e", f"model.tower.checkpoint={tiny_teacher}", *gan), 0),
    }
    found = {name: _explain_units(cfg, stage) for name, (cfg, stage) in cases.items()}
    assert all(n == 0 for units in found.values() for n in units.values()), found
    assert "PatchDiscriminator" in found["vqgan-tiny"] and "generator_step" in found["semhitok-tiny pixel"]


@pytest.mark.paper  # about 20-30 s each: make test-paper (CI runs both)
def test_compiled_training_trains_and_a_graph_breaking_plugin_still_does(tmp_path):
    from types import SimpleNamespace

    import tokzoo
    from tokzoo.nn.quantizers import VectorQuantizer
    from tokzoo.testing import registered_plugin

    class ReadsItsLoss(VectorQuantizer):
        """A plugin quantizer that reads a value on the host in its forward (a graph break)."""

        def forward(self, features):
            out = super().forward(features)
            if float(out.quantized.detach().abs().mean()) < 0:
                raise AssertionError("never")
            return out

    @tokzoo.hookimpl
    def tokzoo_register_quantizers(register):
        register("reads-its-loss", ReadsItsLoss, "vq with a host read")

    torch._dynamo.reset()
    cfg = _config("vq-tiny", tmp_path / "compiled", "recipe.steps=4", "trainer.compile=true")
    Trainer(cfg).train()
    with registered_plugin(SimpleNamespace(tokzoo_register_quantizers=tokzoo_register_quantizers), "breaker"):
        cfg = _config("vq-tiny", tmp_path / "breaks", "recipe.steps=4", "trainer.compile=true",
                      "model.quantizer={name: reads-its-loss, codebook_size: 512, dim: 8}")
        Trainer(cfg).train()
    for run in ("compiled", "breaks"):
        rec = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert any("recon" in r for r in rec) and rec[-1]["eval/psnr"] > 0


# -- the GPU habits that can be seen on a CPU ---------------------------------------------------------------------

def test_ema_on_flat_lists_equals_the_per_tensor_update():
    from tokzoo.train.ema import EMA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = EMA(net, 0.9)
    reference = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(2, 3, 8, 8))  # BatchNorm's running statistics and its integer counter move
        ema.update()
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                reference[k].mul_(0.9).add_(v, alpha=1 - 0.9)
            else:
                reference[k].copy_(v)
    assert all(torch.equal(ema.state[k], reference[k]) for k in reference)


def test_channels_last_and_activation_checkpointing_train_the_same_model(tmp_path):
    """The GPU's memory format and the recomputing blocks, on the CPU: same losses to float
    tolerance (channels_last changes the convolutions' summation order only)."""
    runs = {}
    for name, extra in {"plain": [], "cl": ["trainer.memory_format=channels_last"],
                        "ckpt": ["trainer.checkpoint_activations=true"]}.items():
        cfg = _config("vqgan-tiny", tmp_path / name, "recipe.steps=2", "recipe.disc_start=0", "trainer.log_every=1",
                      *extra)
        trainer = Trainer(cfg)
        if name == "ckpt":  # every block of the conv encoder and decoder recomputes
            blocks = [m for m in trainer.tokenizer.modules() if hasattr(m, "checkpoint_activations")]
            assert blocks and all(m.checkpoint_activations for m in blocks)
        trainer.train()
        runs[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    losses = {name: [r["recon"] for r in rec if "recon" in r] for name, rec in runs.items()}
    assert losses["ckpt"] == losses["plain"]  # recomputation is exact
    assert losses["cl"][0] == pytest.approx(losses["plain"][0], rel=1e-5)  # the first step: summation order only
    saved = json.loads((tmp_path / "cl" / "config.json").read_text())  # the run records how it ran
    assert saved["trainer"]["memory_format"] == "channels_last" and saved["trainer"]["tf32"] is True


@pytest.mark.paper  # about 20-30 s each: make test-paper (CI runs both)
def test_two_processes_match_one_at_the_same_global_batch(tmp_path):
    """gloo, 2 ranks of batch 4 against 1 process of batch 8: the same losses (float tolerance)
    and the same final weights; DDP searched for no unused parameter (the stage does not ask)."""
    common = ["vq-tiny", "data.train_size=64", "data.val_size=16", "trainer.eval_images=8", "recipe.steps=4",
              "trainer.log_every=1", "trainer.grad_accum=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "tokzoo.cli", "train", *common, "trainer.batch_size=8",
                          f"run_dir={tmp_path / 'one'}"], capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}",
                          "-m", "tokzoo.cli", "train", *common, "trainer.batch_size=4", f"run_dir={tmp_path / 'two'}"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]

    def losses(run):
        return [r["recon"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
                if "recon" in r]
    assert len(losses("one")) == 4 and losses("two") == pytest.approx(losses("one"), rel=1e-4, abs=1e-6)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "checkpoints" / "stage1-final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "stage1-final" / "model.safetensors"))
    # within half of one Adam step (lr 2e-4): a parameter whose gradient is near zero moves by about the
    # sign of it, so float summation order alone can move it by a fraction of a step
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-4) for k in a)


def test_every_first_party_stage_gives_each_trainable_parameter_a_gradient(tmp_path, tiny_teacher):
    """Why DDP needs no unused-parameter search for them (Stage.unused_parameters stays False):
    one training step of every stage leaves no parameter that requires a gradient without one
    (EMA codebooks are built untrainable and stay so through every stage)."""
    cases = [("vq-tiny", ["model.quantizer.restart_unused=true"], [0]), ("vqgan-tiny", ["recipe.disc_start=0"], [0]),
             ("semhitok-tiny", [f"model.teacher.checkpoint={tiny_teacher}", "recipe.disc_start=0"], [0, 1]),
             ("vilau-tiny", [f"model.tower.checkpoint={tiny_teacher}", "recipe.disc_start=0"], [0])]
    for preset, extra, stages in cases:
        trainer = Trainer(_config(preset, tmp_path / preset, *extra))
        names = {id(p): n for n, p in trainer.tokenizer.named_parameters()}
        for index in stages:
            trainer._enter_stage(index)
            stage = trainer.stages[index]
            batch = trainer._to_device(collate([trainer.train_set[i] for i in range(4)]))
            trainer.tokenizer.train()
            trainer.optimisers.opt.zero_grad(set_to_none=True)
            ctx = StepContext(10, 10, stage, index, trainer.device)
            trainer.recipe.generator_step(trainer.tokenizer, trainer.tokenizer, batch, ctx).loss.backward()
            trained = [p for g in trainer.optimisers.opt.param_groups for p in g["params"] if p.requires_grad]
            assert trained and not stage.unused_parameters
            assert [names.get(id(p)) for p in trained if p.grad is None] == [], (preset, stage.name)
