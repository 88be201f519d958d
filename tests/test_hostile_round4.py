"""Hostile inputs, round four: each cause fixed at its root, tried the way a careful
user or a hostile file would (results files from elsewhere, config files, names
reaching terminals, two writers, full disks and read-only folders)."""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO, run_tokzoo_here
from tokzoo.errors import CheckpointError, CodesError, ConfigError, ContractError, OutputError, TokzooError

BASELINE = REPO / "benchmarks" / "results" / "reproduce" / "results.json"


# -- results.json from elsewhere: every field checked, never a crash after measuring --------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids,
                                                                                    max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(["metrics", "intervals", "better", "flags", "unavailable", "info", "resolution",
                              "num_images", "skipped", "asked", "sources", "repeats", "swept", "identity",
                              "metric_protocols", "random_parts", "unfinished", "data_fingerprints"]),
       value=json_values, protocol=st.booleans())
def test_a_hand_edited_results_file_is_refused_or_every_writer_reads_it(tmp_path_factory, field, value, protocol):
    from tokzoo.bench.compare import compare_results, print_rows, to_markdown
    from tokzoo.bench.render import render_csv, render_markdown
    from tokzoo.bench.report import render_html
    from tokzoo.bench.results import load_results

    data = json.loads(BASELINE.read_text())
    entry = next(iter(data["tokenizers"].values()))
    if protocol:
        data["protocol"] = value if field == "metrics" else {**data["protocol"], "metrics": value}
    else:
        entry[field] = value
    path = tmp_path_factory.mktemp("r") / "results.json"
    path.write_text(json.dumps(data))
    try:
        res = load_results(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    import io

    from rich.console import Console

    render_markdown(res), render_csv(res), render_html(res)  # none raises on what load_results let through
    try:
        rows = compare_results(res, load_results(BASELINE))
    except TokzooError:
        return  # another protocol, or nothing in common: said clearly
    to_markdown(rows)
    print_rows(rows, [], Console(file=io.StringIO(), width=80))


def test_the_field_rules_name_the_file_and_the_field(tmp_path):
    from tokzoo.bench.results import load_results

    for field, value in (("intervals", {"psnr": "1-2"}), ("flags", ["x"]), ("better", {"psnr": "up"}),
                         ("num_images", "8"), ("intervals", {"psnr": [3.0, 1.0]})):
        data = json.loads(BASELINE.read_text())
        next(iter(data["tokenizers"].values()))[field] = value
        (tmp_path / "results.json").write_text(json.dumps(data))
        with pytest.raises(ConfigError, match=f"results.json: tokenizer '.*' (field|interval) '({field}|psnr)'"):
            load_results(tmp_path)
    data = json.loads(BASELINE.read_text())
    data["protocol"] = ["not", "a", "mapping"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'protocol' is not a mapping"):
        load_results(tmp_path)


def test_a_damaged_entry_in_out_is_set_aside_not_merged(tmp_path):
    from tokzoo.bench.results import load_previous

    data = json.loads(BASELINE.read_text())
    next(iter(data["tokenizers"].values()))["flags"] = ["not", "a", "mapping"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    said = []
    assert load_previous(tmp_path / "results.json", data["protocol"], [], said.append)["tokenizers"] == {}
    assert "unreadable" in said[0] and list(tmp_path.glob("results.unreadable-*.json"))


# -- compare: a typo, nothing compared, a summary file it cannot write -------------------------------------
def test_compare_refuses_a_tolerance_for_no_metric_and_a_comparison_of_nothing(tmp_path):
    out = run_tokzoo_here("compare", str(BASELINE), "--baseline", str(BASELINE), "--tolerance", "psrn=2")
    assert out.returncode == 2 and "'psrn'" in out.stderr and "Did you mean 'psnr'?" in out.stderr
    empty = json.loads(BASELINE.read_text())
    empty["tokenizers"] = {}
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    out = run_tokzoo_here("compare", str(BASELINE), "--baseline", str(tmp_path / "empty.json"))
    assert out.returncode == 2 and "nothing to compare" in out.stderr and "PASS" not in out.stdout
    out = run_tokzoo_here("compare", str(BASELINE), "--baseline", str(BASELINE), "--markdown",
                          str(tmp_path / "missing" / "summary.md"))
    assert out.returncode == 2 and "cannot write" in out.stderr and "folder does not exist" in out.stderr
    assert "Traceback" not in out.stderr


# -- config files: bounded before anything expands them ----------------------------------------------------
def test_nested_yaml_aliases_are_refused_before_they_expand(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 400
    for cmd in (["bench", "--config", str(bomb)], ["sweep", "--config", str(bomb)], ["train", str(bomb)]):
        t0 = time.perf_counter()
        out = run_tokzoo_here(*cmd)
        assert out.returncode == 2 and "more than 100,000 values" in out.stderr, (cmd, out.stderr[-500:])
        assert len(out.stderr) < 2000 and time.perf_counter() - t0 < 30
    big = tmp_path / "big.yaml"
    big.write_text("grid: [" + ",".join(["'q=1'"] * 300_000) + "]\n")
    out = run_tokzoo_here("sweep", "--config", str(big))
    assert out.returncode == 2 and "larger than 1 MB" in out.stderr


@pytest.mark.parametrize("inherit", ["5", "[vq-tiny]", "{a: 1}", "''", "true"])
def test_inherit_that_is_no_name_is_refused(tmp_path, inherit):
    preset = tmp_path / "mine.yaml"
    preset.write_text(f"inherit: {inherit}\nrecipe: {{steps: 1}}\n")
    out = run_tokzoo_here("train", str(preset), cwd=str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'inherit' names the preset it builds on" in out.stderr or "inherit" in out.stderr


# -- one validator per value, in every command -------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:x", "cuda:0", "CPU", ""])
def test_bench_refuses_a_device_as_train_does(tmp_path, device):
    out = run_tokzoo_here("bench", "--tokenizers", "vq-tiny", "--device", device, "--out", str(tmp_path / "o"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-800:]
    assert "device" in out.stderr
    train = run_tokzoo_here("train", "vq-tiny", f"trainer.device={device}", f"run_dir={tmp_path / 'r'}",
                            "recipe.steps=1")
    assert train.returncode == 2 and "Traceback" not in train.stderr
    if device not in ("cuda:0", ""):  # cuda:0 is a device name, this machine has none; "" is no value at all
        assert train.returncode == 2 and "is not a device tokzoo runs on" in train.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_sweep_refuses_its_folder_and_arguments_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    cases = [(["--out", "."], "working folder itself"), (["--out", str(tmp_path / "afile")], "existing file"),
             (["--out", str(tmp_path / "s"), "--bench-args=--num-images '4"], "No closing quotation"),
             (["--out", str(tmp_path / "s"), "--torchrun=--nproc_per_node \"2"], "No closing quotation")]
    for extra, said in cases:
        out = run_tokzoo_here("sweep", "vq-tiny", "q:model.quantizer.codebook_size=16,32", *extra, cwd=str(tmp_path))
        assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, (extra, out.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing trained, nothing written


def test_show_of_a_kind_suggests_names_of_that_kind():
    out = run_tokzoo_here("show", "vq", "--kind", "preset")
    assert out.returncode == 2 and "Did you mean 'vq'" not in out.stderr
    assert "'vq' is a quantizer: tokzoo show vq --kind quantizer" in " ".join(out.stderr.split())


def test_brace_patterns_and_labels_are_bounded_before_they_cost():
    from tokzoo.data.webdataset import MAX_LABEL, expand_shards

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="more than 1,000,000 shards"):
        expand_shards("/nowhere/x-{00000000..99999999}.tar")
    assert time.perf_counter() - t0 < 20 and MAX_LABEL <= 1 << 16


# -- what is reused or cached is keyed by what defines it --------------------------------------------------
def _folder(root: Path, colour: int, labels: dict[str, str] | None = None) -> Path:
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (colour, 40 * i, 90)).save(root / c / f"{i}.png")
    if labels:
        (root / "labels.csv").write_text("".join(f"{k},{v}\n" for k, v in labels.items()))
    return root


def test_the_imagefolder_fingerprint_follows_images_and_labels(tmp_path):
    from PIL import Image

    from tokzoo.data import build_dataset

    root = _folder(tmp_path / "imgs" / "train", 10).parent
    (root / "val").mkdir()
    for i in range(4):  # ImageNet's flat val/, labelled by a file
        Image.new("RGB", (16, 16), (10 * i, 40, 90)).save(root / "val" / f"{i}.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("0.png,dog\n1.png,cat\n2.png,dog\n3.png,dog\n")
    spec = {"name": "imagefolder", "path": str(root), "resolution": 16, "labels": str(labels)}
    first = build_dataset(spec, "val").fingerprint()
    os.utime(root / "val" / "0.png", ns=(1, 1))  # touched to another time, same size: another file version
    second = build_dataset(spec, "val").fingerprint()
    assert second != first
    labels.write_text("0.png,cat\n1.png,cat\n2.png,dog\n3.png,dog\n")
    assert build_dataset(spec, "val").fingerprint() != second  # a corrected labels file: the judge trains anew


def test_a_ready_made_tokenizer_is_identified_by_its_weights():
    from tokzoo.bench.resolve import state_sha256

    net = torch.nn.Linear(3, 2)
    before = state_sha256(net)
    with torch.no_grad():
        net.weight[0, 0] += 1e-3
    assert state_sha256(net) != before and state_sha256(object()) is None


# -- files that arrive with a results folder: names are never paths ---------------------------------------
def test_grid_rows_from_a_folder_never_name_a_file_outside_it(tmp_path):
    from safetensors.torch import save_file

    from tokzoo.bench.outputs import GRID_ROWS, _write_grid, stored_rows

    out, victim = tmp_path / "out", tmp_path / "important"
    out.mkdir()
    img = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    keys = ["originals", "tok:a", f"{victim}:tok:a", "../x:tok:a", "ok:tok:a"]
    save_file({**{k: img.clone() for k in keys}, "bad:tok:a": torch.zeros(1, 3, 8, 8)}, str(out / GRID_ROWS))
    rows = stored_rows(out)
    assert sorted(rows) == ["ok:tok:a", "originals", "tok:a"]
    results = {"tokzoo_results": 1, "protocol": None, "tokenizers": {"a": {"metrics": {}}}}
    _write_grid(out, results, {**rows, "../y:tok:a": img.clone()})
    assert not list(tmp_path.glob("important*")) and not (tmp_path / "x_grid.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_report_of_a_set_aside_file_never_rewrites_the_folder(tmp_path):
    import shutil

    folder = tmp_path / "bench"
    folder.mkdir()
    shutil.copy(BASELINE, folder / "results.json")
    shutil.copy(BASELINE, folder / "results.20260101-000000.json")
    assert run_tokzoo_here("report", str(folder)).returncode == 0
    current = (folder / "results.md").read_text()
    out = run_tokzoo_here("report", str(folder / "results.20260101-000000.json"))
    assert out.returncode == 2 and "--out" in out.stderr and (folder / "results.md").read_text() == current
    out = run_tokzoo_here("report", str(folder / "results.20260101-000000.json"), "--out", str(tmp_path / "old"))
    assert out.returncode == 0 and (tmp_path / "old" / "results.md").is_file()
    assert (tmp_path / "old" / "results.json").is_file()


# -- two writers of one folder -----------------------------------------------------------------------------
def _take(folder: str, q, go) -> None:
    from tokzoo.runfolder import RunLock, RunLocked

    go.wait()
    try:
        lock = RunLock(folder).acquire()
    except RunLocked:
        q.put("busy")
        return
    q.put(("held", time.monotonic()))
    time.sleep(0.3)
    q.put(("released", time.monotonic()))
    lock.release()


@pytest.mark.parametrize("flock", [True, False])
def test_two_writers_never_both_take_a_stale_lock(tmp_path, flock, monkeypatch):
    if not flock:  # a file system without flock: the pid rule with an exclusive takeover
        import fcntl

        def no_flock(*a):
            raise OSError(errno.ENOLCK, "no locks")
        monkeypatch.setattr(fcntl, "flock", no_flock)
    ctx = mp.get_context("fork")
    for trial in range(6):
        folder = tmp_path / str(trial)
        folder.mkdir()
        (folder / ".tokzoo.lock").write_text(json.dumps({"pid": 2 ** 22 + 1, "host": socket.gethostname()}))
        q, go = ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_take, args=(str(folder), q, go)) for _ in range(3)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(30)
        events = []
        while not q.empty():
            events.append(q.get())
        spans = sorted((t, kind) for kind, t in (e for e in events if e != "busy"))
        depth = 0
        for _, kind in spans:  # never two holders at one time
            depth += 1 if kind == "held" else -1
            assert depth <= 1, spans
        assert any(e != "busy" for e in events)


# -- full disks, read-only folders, caches ----------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_leaves_nothing_partial(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import tokzoo.ckptio as ckptio

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")
    monkeypatch.setattr(ckptio, "save_file", full)
    with pytest.raises(CheckpointError, match="no space left"):
        ckptio.save_checkpoint(tmp_path / "run", "step-1", torch.nn.Linear(2, 2), {}, {"step": 1})
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))

    def torch_full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed; No space left on device")
    monkeypatch.undo()
    monkeypatch.setattr(ckptio.torch, "save", torch_full)
    with pytest.raises(CheckpointError, match="no space left"):
        ckptio.save_checkpoint(tmp_path / "run", "step-1", torch.nn.Linear(2, 2), {}, {"step": 1})
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("err, said", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "permission denied")])
def test_every_write_says_why_it_failed_and_leaves_no_partial_file(tmp_path, monkeypatch, err, said):
    import tokzoo.ckptio as ckptio

    real = os.fsync

    def failing(fd):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(ckptio.os, "fsync", failing)
    with pytest.raises(OutputError, match=said) as info:
        ckptio.atomic_write(tmp_path / "results.md", "x")
    monkeypatch.setattr(ckptio.os, "fsync", real)
    assert str(tmp_path / "results.md") in str(info.value) and info.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []
    ckptio.atomic_write(tmp_path / "odd.md", "a broken image named \udcff.png")  # surrogate: written, not raised
    assert (tmp_path / "odd.md").read_bytes().startswith(b"a broken image named ")


def test_a_cache_folder_that_is_a_file_stops_before_the_work(tmp_path, monkeypatch):
    from tokzoo.weights import cache_folder

    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("TOKZOO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(OutputError, match="TOKZOO_CACHE_DIR"):
        cache_folder("judge")


def test_a_checkpoint_that_cannot_be_read_is_not_called_corrupt(tmp_path):
    from tokzoo.ckptio import unreadable

    denied = unreadable(tmp_path / "model.safetensors", PermissionError(13, "Permission denied"))
    assert "permission denied" in str(denied) and "corrupt" not in str(denied)
    text = unreadable(tmp_path / "model.safetensors", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid"))
    assert "not UTF-8" in str(text) and "corrupt" not in str(text)


# -- contract breaches: exit 3, naming who ---------------------------------------------------------------
def test_codes_of_the_wrong_rank_are_a_contract_breach():
    from tokzoo.codes import Codes

    with pytest.raises(CodesError, match="'grid' layout's level is \\[B, h, w\\]") as info:
        Codes({"code": torch.zeros(2, 16, dtype=torch.long)}, {"code": 8}, "grid")
    assert isinstance(info.value, ContractError) and isinstance(info.value, ValueError)
    assert info.value.exit_code == 3


def test_vqa_attribute_names_that_would_collide_are_not_asked():
    from tokzoo.bench.understanding import VQAProbe

    probe = VQAProbe()
    probe.declared, probe.why = {}, {}
    attrs = [{"top1": "a", "colour_chance": "b", "colour": c, "shape": s} for c in "xy" for s in "pq"]
    asked = [name for name, _ in probe._questions(attrs)]
    assert asked == ["colour", "shape"]
    assert any("top1" in k for k in probe.why) and any("colour_chance" in k for k in probe.why)


def test_a_read_only_run_folder_is_one_message(tmp_path, monkeypatch):
    from tokzoo import runfolder

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    monkeypatch.setattr(runfolder.os, "open", read_only)
    with pytest.raises(OutputError, match="cannot write the run folder .*read-only"):
        runfolder.RunLock(tmp_path / "run").acquire()


YAML_PIECES = ["preset: vq-tiny\n", "grid: [a=1,2]\n", "out: x\n", "jobs: 2\n", "&a ", "*a", "[", "]", "{", "}",
               ": ", "- ", "\n", "  ", "!!python/object:os.system ", "tokenizers: ", "metrics: psnr\n", "'", "\"",
               "\t", "\x00", "\udcff", "%YAML 1.1\n", "---\n", "? ", "inherit: 5\n", "1e-3", "null", "~"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(st.sampled_from(YAML_PIECES), max_size=12).map("".join))
def test_any_config_file_is_read_or_refused_with_its_name(tmp_path_factory, text):
    from tokzoo.bench.options import read_bench_file
    from tokzoo.config import load_preset
    from tokzoo.sweep.options import read_sweep_file

    path = tmp_path_factory.mktemp("c") / "mine.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    for read in (read_bench_file, read_sweep_file, lambda p: load_preset(str(p))):
        try:
            read(path)
        except ConfigError as exc:
            assert str(path) in str(exc) and len(str(exc)) < 5000


def test_show_names_the_slot_an_encoder_goes_in():
    out = run_tokzoo_here("show", "conv")
    assert "set it: model.encoder={name: conv, ...}" in out.stdout and "model.name=conv" not in out.stdout


def test_compare_pairs_names_and_says_which_it_could_not(tmp_path):
    """#38: a retrain benched by path against a baseline benched by preset name
    compares by its name; a sweep point's name is paired with --match."""
    data = json.loads(BASELINE.read_text())
    name = next(iter(data["tokenizers"]))
    entry = data["tokenizers"][name]
    data["tokenizers"] = {"runs/retrain/" + name: entry}  # written by path, as benches before one-name did
    (tmp_path / "new.json").write_text(json.dumps(data))
    out = run_tokzoo_here("compare", str(tmp_path / "new.json"), "--baseline", str(BASELINE))
    assert "not in the baseline, so not compared" not in out.stdout and " ok " in out.stdout, out.stdout
    data["tokenizers"] = {"K=64": entry}  # a sweep point
    (tmp_path / "new.json").write_text(json.dumps(data))
    out = run_tokzoo_here("compare", str(tmp_path / "new.json"), "--baseline", str(BASELINE))
    said = " ".join((out.stdout + out.stderr).split())  # nothing in common: exit 2, naming both sides
    assert out.returncode == 2 and "in the baseline only" in said
    assert "not in the baseline, so not compared: K=64" in said and "--match" in said
    out = run_tokzoo_here("compare", str(tmp_path / "new.json"), "--baseline", str(BASELINE), "--match", "K=64", name)
    assert "not in the baseline, so not compared" not in out.stdout and " ok " in out.stdout
    out = run_tokzoo_here("compare", str(tmp_path / "new.json"), "--baseline", str(BASELINE),
                          "--match", "nope", name)
    assert out.returncode == 2 and "is not a tokenizer of the new results" in out.stderr


def test_numbers_a_reader_may_misread_are_explained_where_shown():
    """#38: the sign of the AR class bits and the VQA chance level, under results.md's and report.html's tables."""
    from tokzoo.bench.render import render_markdown
    from tokzoo.bench.report import render_html
    from tokzoo.bench.results import load_results

    res = load_results(BASELINE)
    md, page = render_markdown(res), render_html(res)
    for text in (md, page):
        assert "negative: the class-conditioned prediction is worse" in " ".join(text.split())
        assert "can fall below 1/k" in text


def test_a_help_comment_is_read_before_or_after_a_noqa():
    """#38: `show` took "# noqa: B006" for help, and lost help written after it."""
    from tokzoo.describe import _comments

    def factory(a: list = [],  # noqa: B006  # the first help
                b: list = [],  # the second help  # noqa: B006
                c: int = 0):  # type: ignore
        return a, b, c

    found = _comments(factory)
    assert found.get("a") == "the first help" and found.get("b") == "the second help" and "c" not in found


def test_a_dataset_is_created_by_name_with_what_its_factory_takes():
    """#38: registry.create("dataset", NAME, split=...) failed with "unknown config key 'split'"."""
    from tokzoo.registry import create

    val = create("dataset", "shapes", split="val", resolution=32)
    assert len(val) > 0 and tuple(val[0]["image"].shape) == (3, 32, 32)
    with pytest.raises(ConfigError, match="splt"):
        create("dataset", "shapes", splt="val")


def test_one_name_per_tokenizer_is_the_results_key_and_the_path_stays_in_the_entry():
    """#38: the display name is assigned once (results.json key = every output's label)."""
    from tokzoo.bench.results import assign_names, by_display_name

    names = assign_names(["semhitok-tiny", "runs/a/semhitok-tiny", "runs/b/semhitok-tiny",
                          "runs/c/checkpoints/stage1-final"], {})
    assert names == {"semhitok-tiny": "semhitok-tiny", "runs/a/semhitok-tiny": "a/semhitok-tiny",
                     "runs/b/semhitok-tiny": "b/semhitok-tiny", "runs/c/checkpoints/stage1-final": "c/stage1-final"}
    # merged into results that already hold some: a benched path keeps its key, a new one never takes a held key
    held = {"semhitok-tiny": "runs/semhitok-tiny", "K=64": "out/runs/K=64"}
    again = assign_names(["runs/semhitok-tiny", "other/semhitok-tiny", "out/runs/K=64"], held)
    assert again["runs/semhitok-tiny"] == "semhitok-tiny" and again["out/runs/K=64"] == "K=64"
    assert again["other/semhitok-tiny"] not in held
    # a file written when paths were keys reads with display names, the path kept
    data = {"tokenizers": {"runs/x/vq": {"metrics": {}}, "vq": {"metrics": {}}, "/abs/runs/y": {"metrics": {}}}}
    moved = by_display_name(data)
    assert moved == {"/abs/runs/y": "y", "runs/x/vq": "x/vq"} and data["tokenizers"]["y"]["path"] == "/abs/runs/y"
    assert set(data["tokenizers"]) == {"x/vq", "vq", "y"}  # "vq" is held: the path's name grows until it differs


def test_report_with_a_baseline_sharing_no_tokenizer_is_refused_naming_both(tmp_path):
    data = json.loads(BASELINE.read_text())
    entry = next(iter(data["tokenizers"].values()))
    data["tokenizers"] = {"K=64": entry}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(data))
    out = run_tokzoo_here("report", str(tmp_path / "r"), "--baseline", str(BASELINE))
    said = " ".join(out.stderr.split())
    assert out.returncode == 2 and "no tokenizer in common" in said and "K=64" in said and "--match" in said
    assert not (tmp_path / "r" / "report.html").exists()


def test_a_sweep_compares_every_point_with_one_baseline_tokenizer_by_pattern(tmp_path):
    """#38: --match 'K=*' NAME pairs each sweep point with the baseline's one tokenizer."""
    data = json.loads(BASELINE.read_text())
    name, entry = next(iter(data["tokenizers"].items()))
    (tmp_path / "base.json").write_text(json.dumps({**data, "tokenizers": {name: entry}}))
    worse = json.loads(json.dumps(entry))
    worse["metrics"]["psnr"] -= 10  # far outside any noise band
    (tmp_path / "sweep.json").write_text(json.dumps({**data, "tokenizers": {"K=64": entry, "K=256": worse,
                                                                             "other": entry}}))
    out = run_tokzoo_here("compare", str(tmp_path / "sweep.json"), "--baseline", str(tmp_path / "base.json"),
                          "--match", "K=*", name, "--markdown", str(tmp_path / "table.md"))
    assert out.returncode == 1 and "1 regression" in out.stdout  # K=256's psnr, and nothing else
    rows = [r for r in (tmp_path / "table.md").read_text().splitlines() if "| psnr" in r]
    assert len(rows) == 2 and any("K=64" in r and "ok" in r for r in rows), rows
    assert any("K=256" in r and "REGRESSION" in r for r in rows), rows
    said = " ".join(out.stdout.split())
    assert "in the baseline only" not in said and "not in the baseline, so not compared: other" in said
    out = run_tokzoo_here("compare", str(tmp_path / "sweep.json"), "--baseline", str(tmp_path / "base.json"),
                          "--match", "Q=*", name)
    assert out.returncode == 2 and "'Q=*' is not a tokenizer of the new results" in out.stderr
