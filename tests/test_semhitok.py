"""SemHiTok: SGHC lookup, decoupling guarantee, token round trip, paper-size build."""
import time

import pytest
import torch

import tokzoo
from tokzoo.config import load_run_config
from tokzoo.registry import get_registry
from tokzoo.train.checkpoint import build_model_from_config
from tokzoo.train.trainer import Trainer


def test_sghc_searches_only_the_selected_subcodebook():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "sghc", num_semantic=50, sub_size=4, dim=6, restart_every=1000)
    z = torch.randn(3, 6, 5, 5)
    parent = torch.randint(0, 50, (3, 5, 5))
    out = q(z, parent)
    j = out.codes.levels["pixel"]
    assert torch.equal(out.codes.levels["semantic"], parent) and int(j.max()) < 4
    # brute force over the parent's own sub-codebook
    zn = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, 6), dim=-1)
    sub = q.subcodebooks()
    for n, (p, jj) in enumerate(zip(parent.flatten(), j.flatten())):
        assert int((sub[p] @ zn[n]).argmax()) == int(jj)
    # every pixel code lies in its position's sub-codebook: flat ids in [i*m, (i+1)*m)
    ids = out.codes.token_ids().reshape(3, 5, 5)
    assert ((ids >= parent * 4) & (ids < (parent + 1) * 4)).all()
    q.eval()
    assert torch.allclose(q.lookup(out.codes), q(z, parent).quantized, atol=1e-6)


def test_sghc_never_builds_a_full_distance_matrix():
    """K*m = 1.6M codes and N = 8192 positions: an [N, K*m] matrix would need 52 GB."""
    q = get_registry().create("quantizer", "sghc", num_semantic=200_000, sub_size=8, dim=8, ema=False)
    z = torch.randn(8, 8, 32, 32)
    parent = torch.randint(0, 200_000, (8, 32, 32))
    t = time.perf_counter()
    with torch.no_grad():
        out = q.eval()(z, parent)
    assert out.codes.levels["pixel"].shape == (8, 32, 32)
    assert time.perf_counter() - t < 30


def test_sghc_reinitialises_dead_subcodes_from_their_own_features():
    torch.manual_seed(0)
    q = get_registry().create("quantizer", "sghc", num_semantic=4, sub_size=4, dim=3, restart_every=2, ema=False)
    z = torch.randn(1, 3, 1, 1).expand(1, 3, 4, 4).contiguous()
    parent = torch.zeros(1, 4, 4, dtype=torch.long)  # every position under semantic code 0
    q(z, parent)
    q(z, parent)
    dead = (q.usage[0] == 0).nonzero().flatten()
    assert len(dead) == 3  # one feature everywhere: one sub-code used, three dead
    before = q.table.detach().clone()
    q(z, parent)  # the third step restarts them
    zn = torch.nn.functional.normalize(z.permute(0, 2, 3, 1).reshape(-1, 3), dim=-1)
    for slot in dead.tolist():
        new = q.table[0, slot].detach()
        assert torch.isclose(zn, new[None], atol=1e-6).all(1).any(), "re-initialised from code 0's own features"
    live = [s for s in range(4) if s not in dead.tolist()]
    assert torch.equal(q.table[0, live], before[0, live])
    assert torch.equal(q.table[1:], before[1:])  # other semantic codes untouched (they were never used)


def test_two_stages_decouple_semantic_tokens(tiny_teacher, tmp_path):
    run = tmp_path / "sh"
    over = [f"model.teacher.checkpoint={tiny_teacher}", "model.semantic_codebook_size=32", "recipe.stage1_steps=4",
            "recipe.stage2_steps=4", "recipe.disc_start=2", "data.train_size=64", "data.val_size=16",
            "trainer.eval_images=16", "trainer.batch_size=8", f"run_dir={run}"]
    cfg = load_run_config("semhitok-tiny", over)
    trainer = Trainer(cfg)
    trainer.train()
    x = torch.stack([trainer.val_set[i]["image"] for i in range(8)])
    stage1 = tokzoo.load_tokenizer(run / "checkpoints" / "stage1-final")
    stage2 = tokzoo.load_tokenizer(run / "checkpoints" / "stage2-final")
    with torch.no_grad():
        s1, s2 = stage1.encode_semantic(x), stage2.encode_semantic(x)
        assert torch.equal(s1.levels["semantic"], s2.levels["semantic"])
        assert torch.equal(stage1.token_features(s1), stage2.token_features(s2))
    for k, v in stage1.semantic.state_dict().items():
        assert torch.equal(v, stage2.semantic.state_dict()[k]), k
    # stage 2 did train the pixel branch
    assert not torch.equal(stage1.enhance.decoder.conv_out.weight, stage2.enhance.decoder.conv_out.weight)
    # tokens: one per position, h = i*m + j, decode accepts codes or flat ids
    codes = stage2.encode(x)
    ids = codes.token_ids()
    assert ids.shape == (8, 64) and int(ids.max()) < 32 * 8
    assert torch.equal(ids // 8, codes.levels["semantic"].reshape(8, -1))
    assert torch.equal(stage2.decode(ids), stage2.decode(codes))
    assert stage2.info.vocab == {"semantic": 32, "pixel": 8}
    with pytest.raises(ValueError, match="semhitok takes 32x32 images.*not 64x64"):  # not an einsum crash
        stage2.encode(torch.rand(1, 3, 64, 64))


def test_stage_two_alone_starts_from_stage_one(tiny_teacher, tmp_path, cli):
    run = tmp_path / "sh"
    common = ["semhitok-tiny", f"model.teacher.checkpoint={tiny_teacher}", "model.semantic_codebook_size=32",
              "recipe.stage1_steps=2", "recipe.stage2_steps=2", "data.train_size=32", "data.val_size=16",
              "trainer.eval_images=16", "trainer.batch_size=8", f"run_dir={run}"]
    first = cli("train", *common, "recipe.stage2_steps=0")
    assert first.returncode == 0, first.stderr
    second = cli("train", *common, "--stage", "2", f"run_dir={run}")
    assert second.returncode == 0, second.stderr
    assert "stage 2 starts from" in second.stdout
    done = (run / "checkpoints" / "stage2-final" / "model.safetensors").read_bytes()
    again = cli("train", *common, "--stage", "2", f"run_dir={run}")  # stage 2 is done: not trained over
    assert again.returncode == 2 and "already holds checkpoints past stage 1 (latest: stage2-final)" in again.stderr
    assert (run / "checkpoints" / "stage2-final" / "model.safetensors").read_bytes() == done


def test_paper_size_preset_builds_and_runs_without_downloads():
    cfg = load_run_config("semhitok", ["model.teacher.pretrained=random"])
    assert cfg["model"]["semantic_codebook_size"] * cfg["model"]["sub_codebook_size"] == 196_608
    tok = build_model_from_config(cfg).eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 256, 256)
        codes = tok.encode(x)
        rec = tok.decode(codes)
    assert codes.token_ids().shape == (1, 256) and rec.shape == (1, 3, 256, 256)
    assert tok.info.tokens_per_image == 256
