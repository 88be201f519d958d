"""The trainer: resume after a real kill, torchrun, NaN guard, checkpoints, load_tokenizer."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

import tokzoo
from conftest import free_port
from tokzoo.errors import CheckpointError
from tokzoo.train.trainer import NonFiniteLossError, Trainer
from tokzoo.config import load_run_config

TINY = ["model.resolution=16", "data.resolution=16", "data.train_size=256", "data.val_size=16",
        "model.encoder.ch=8", "model.decoder.ch=8", "model.encoder.z_channels=16", "model.decoder.z_channels=16",
        "model.quantizer.codebook_size=64", "trainer.batch_size=8", "trainer.eval_images=16", "trainer.log_every=2"]


def _weights(run_dir, tag=None):
    ck = Path(run_dir) / "checkpoints"
    tag = tag or (ck / "latest").read_text().strip()
    return load_file(str(ck / tag / "model.safetensors"))


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, cli):
    steps = ["recipe.steps=40", "trainer.ckpt_every=3", "trainer.ema_decay=0.9",
             "model.quantizer.restart_unused=true", "model.quantizer.restart_every=5"]
    full = cli("train", "vq-tiny", *TINY, *steps, f"run_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr
    # the same run, killed with SIGKILL as soon as it has written a checkpoint past step 6
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "tokzoo.cli", "train", "vq-tiny", *TINY, *steps,
                             f"run_dir={tmp_path / 'killed'}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest.exists() and int(latest.read_text().strip().split("-")[-1].replace("final", "0") or 0) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tag = latest.read_text().strip()
    assert tag.startswith("step-"), f"the run finished before it could be killed ({tag})"
    resumed = cli("train", "vq-tiny", *TINY, *steps, f"run_dir={tmp_path / 'killed'}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a = load_file(str(tmp_path / "full" / "checkpoints" / "stage1-final" / "ema.safetensors"))
    ema_b = load_file(str(tmp_path / "killed" / "checkpoints" / "stage1-final" / "ema.safetensors"))
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_torchrun_two_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "tokzoo.cli", "train", "vq-tiny", *TINY, "recipe.steps=6", f"run_dir={run_dir}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "recon" in r]
    assert train_steps == sorted(set(train_steps))  # only rank 0 wrote, once per step
    assert (run_dir / "checkpoints" / "stage1-final" / "model.safetensors").is_file()


class _NaNRecipe:
    """A reconstruction recipe whose loss turns NaN at step 5."""


def test_nan_loss_stops_cleanly_and_keeps_checkpoint(tmp_path):
    from tokzoo.registry import get_registry
    from tokzoo.train.recipes import ReconstructionRecipe

    class NaNAt5(ReconstructionRecipe):
        def generator_step(self, model, tokenizer, batch, ctx):
            res = super().generator_step(model, tokenizer, batch, ctx)
            if ctx.step >= 5:
                res.terms["recon"] = res.terms["recon"] * float("nan")
                res.loss = sum(res.terms.values())
            return res

    class Plugin:
        @tokzoo.hookimpl
        def tokzoo_register_recipes(self, register):
            register("nan-at-5", NaNAt5, "test")

    reg = get_registry()
    reg.add_plugin(Plugin(), "nanplug", "tokzoo-nanplug", "0")
    cfg = load_run_config("vq-tiny", TINY + ["recipe={name: nan-at-5, steps: 20}", "trainer.ckpt_every=4",
                                             f"run_dir={tmp_path / 'nan'}"])
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(cfg).train()
    msg = str(err.value)
    assert "loss term 'recon' became nan at step 5" in msg and "step-00000004" in msg
    assert (tmp_path / "nan" / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    tok = tokzoo.load_tokenizer(tmp_path / "nan")
    assert all(torch.isfinite(p).all() for p in tok.parameters())


def test_cli_reports_nan_without_traceback(tmp_path, cli):
    out = cli("train", "vq-tiny", *TINY, "recipe.steps=3", "trainer.lr=1e30", "trainer.grad_clip=0",
              "trainer.beta1=0.0", f"run_dir={tmp_path / 'boom'}")
    if out.returncode == 0:
        pytest.skip("lr=1e30 did not diverge within 3 steps on this machine")
    assert out.returncode == 3 and "Traceback" not in out.stderr and "became" in out.stderr


def test_load_tokenizer_round_trip_and_bad_checkpoints(tmp_path, cli):
    run = tmp_path / "run"
    cfg = load_run_config("vq-tiny", TINY + ["recipe.steps=4", f"run_dir={run}"])
    trainer = Trainer(cfg)
    trainer.train()
    tok = tokzoo.load_tokenizer(run)
    x = torch.rand(2, 3, 16, 16)
    trainer.tokenizer.eval()
    assert torch.equal(tok.encode(x).token_ids(), trainer.tokenizer.encode(x).token_ids())
    assert torch.equal(tok.decode(tok.encode(x)), trainer.tokenizer.reconstruct(x))
    assert tok.config["model"]["quantizer"]["codebook_size"] == 64

    ck = run / "checkpoints" / "stage1-final"
    # truncated weights
    broken = tmp_path / "broken"
    broken.mkdir()
    data = (ck / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        tokzoo.load_tokenizer(broken)
    # weights of another shape under a config that says otherwise
    from safetensors.torch import save_file
    meta_cfg = dict(tok.config)
    meta_cfg["model"] = json.loads(json.dumps(tok.config["model"]))
    meta_cfg["model"]["quantizer"]["codebook_size"] = 32
    mism = tmp_path / "mismatch"
    mism.mkdir()
    save_file({k: v.contiguous() for k, v in tok.state_dict().items()}, str(mism / "model.safetensors"),
              metadata={"format": "tokzoo-checkpoint-1", "tokzoo_config": json.dumps(meta_cfg)})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        tokzoo.load_tokenizer(mism)
    with pytest.raises(CheckpointError, match="does not exist"):
        tokzoo.load_tokenizer(tmp_path / "nowhere")
    # the CLI: resume where nothing was saved; and a second run refusing to overwrite
    out = cli("train", "vq-tiny", *TINY, f"run_dir={tmp_path / 'empty'}", "--resume")
    assert out.returncode == 2 and "no checkpoint in" in out.stderr and "Traceback" not in out.stderr
    again = cli("train", "vq-tiny", *TINY, f"run_dir={run}")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (ck / "model.safetensors").read_bytes() == data  # nothing was lost


def test_fine_tuning_starts_from_the_run_and_never_overwrites_one(tmp_path, cli):
    """`init_from=RUN` (the docs' fine-tuning path): the new run starts from RUN's
    weights (with lr=0 they come out unchanged) and the same command again is
    refused instead of writing over the fine-tuned run."""
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=2", f"run_dir={base}"])).train()
    args = [*TINY, "recipe.steps=1", "trainer.lr=0", f"init_from={base}", f"run_dir={tuned}"]
    Trainer(load_run_config("vq-tiny", args)).train()
    start, end = _weights(base), _weights(tuned)
    assert set(start) == set(end) and all(torch.equal(start[k], end[k]) for k in start)
    files = {f: f.read_bytes() for f in (tuned / "checkpoints" / "stage1-final").iterdir()}
    again = cli("train", "vq-tiny", *args)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert {f: f.read_bytes() for f in files} == files  # nothing was written over


def test_resume_with_changed_model_config_is_refused(tmp_path):
    run = tmp_path / "r"
    Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=2", f"run_dir={run}"])).train()
    cfg = load_run_config("vq-tiny", TINY + ["recipe.steps=2", f"run_dir={run}", "model.quantizer.codebook_size=32"])
    with pytest.raises(CheckpointError, match=r"model differ\(s\) from the run's recorded config"):
        Trainer(cfg).train(resume=True)


def test_training_improves_reconstruction(tmp_path):
    cfg = load_run_config("vq-tiny", TINY + ["recipe.steps=120", "trainer.lr=1e-3", f"run_dir={tmp_path / 'fit'}"])
    Trainer(cfg).train()
    evals = [json.loads(l) for l in (tmp_path / "fit" / "metrics.jsonl").read_text().splitlines()]
    psnr = [r["eval/psnr"] for r in evals if "eval/psnr" in r]
    assert psnr[-1] > psnr[0] + 1.5, psnr  # measured on shapes v2: 10.6 -> 12.2 dB (16 px, 8 channels)
    assert (tmp_path / "fit" / "samples" / "stage1-end.png").is_file()


def test_a_collapsing_codebook_is_said_while_training(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    from torch import nn

    import tokzoo
    from tokzoo.api import Codes, Quantizer, QuantizerOutput
    from tokzoo.testing import registered_plugin
    from tokzoo.train import usage

    class OneCode(Quantizer):
        """Every position mapped to code 0 of 64: the collapse a bad first architecture trains into."""

        layout = "grid"

        def __init__(self, dim: int = 8, codebook_size: int = 64):
            super().__init__()
            self.code = nn.Parameter(torch.zeros(1, dim, 1, 1))
            self.size, self.dim = codebook_size, dim

        @property
        def vocab(self):
            return {"code": self.size}

        def forward(self, z):
            q = z + (self.code.expand_as(z) - z).detach()
            return QuantizerOutput(q, Codes({"code": torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.long)},
                                            self.vocab), {"commitment": ((z - q.detach()) ** 2).mean()})

        def lookup(self, codes):
            return self.code.expand(codes.levels["code"].shape[0], -1, *codes.levels["code"].shape[1:])

    @tokzoo.hookimpl
    def tokzoo_register_quantizers(register):
        register("one-code", OneCode, "always code 0")

    monkeypatch.setattr(usage, "WINDOW", 4)
    out = io.StringIO()
    with registered_plugin(SimpleNamespace(tokzoo_register_quantizers=tokzoo_register_quantizers), "collapse"):
        cfg = load_run_config("vq-tiny", TINY + ["model.quantizer={name: one-code, dim: 8}", "recipe.steps=10",
                                                 f"run_dir={tmp_path / 'run'}"])
        Trainer(cfg, console=Console(file=out, width=300, color_system=None)).train()
    said = out.getvalue()
    # one warning, naming the level, its usage and the remedies; the stage's summary gives usage beside PSNR
    assert said.count("codebook collapse at level 'code'") == 1, said
    assert "1 of 64 codes (1.56 %) used over the last 4 steps" in said and "restart_unused=true" in said
    assert "codes used: code 1.56%" in said and "use 1.56%" in said
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "usage/code" in r]
    assert logged and logged[-1]["usage/code"] == 1 / 64 and logged[-1]["perplexity/code"] == pytest.approx(1.0)


def test_a_healthy_codebook_trains_without_a_warning(tmp_path):
    import json

    out = io.StringIO()
    Trainer(load_run_config("vq-tiny", TINY + ["recipe.steps=4", f"run_dir={tmp_path / 'run'}"]),
            console=Console(file=out, width=300, color_system=None)).train()
    assert "collapse" not in out.getvalue()
    rec = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(0 < r.get("usage/code", 0) <= 1 for r in rec)
