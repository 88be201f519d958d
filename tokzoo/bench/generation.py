"""``ar-probe``: generation in miniature. Every tokenizer's tokens get the same
small class-conditional GPT (:mod:`tokzoo.nn.gpt`), trained for the same
budget on the codes of the train split, and the tokens are judged by what
the GPT does with them (GigaTok's AR probing):

- ``ar_nll_bits``: teacher-forced, class-conditional NLL of the measured
  images' tokens, in bits per image (comparable across vocabularies and
  sequence lengths), with a bootstrap interval over images;
  ``ar_nll_bits_per_token`` beside it; ``ar_class_bits``: the NLL with the
  null class minus the NLL with the true class, the bits the class is worth
  to the GPT (at most log2 of the class count; about 0 when the GPT has not
  learned to use the class, and then its samples cannot show it);
- ``gfid``: Fréchet distance of the generated images to the measured
  originals in InceptionV3 pool3 features (rFID's network and statistics),
  when its weights file is found;
- ``gen_class_acc``: how often a generated image shows the class it was asked
  for, by the judge (:mod:`tokzoo.bench.judge`, trained on the real train
  split); ``judge_top1`` (the judge on the real measured images) is the
  ceiling, ``judge_recon_top1`` (the judge on the tokenizer's reconstructions
  of them) the ceiling a sample decoded by this tokenizer can reach;
  ``gfd_judge``: Fréchet distance in the judge's features
  (dataset-specific, never a literature gFID);
- ``ar_probe_top1`` (``feature_probe=true``): a linear probe on the GPT's
  middle-layer features of the measured images (null class, mean over tokens).

Samples are drawn by the standard protocol (temperature 1, top-k off, top-p
1, classifier-free guidance at ``cfg_scale``, classes uniform, seeded) and go
back through the tokenizer's own ``decode``. ``precision=bf16`` runs the GPT's
training, NLL and sampling under bf16 autocast (recorded in the protocol; the
default, fp32, is not written, so results from before the setting compare);
``compile=true`` compiles the sampler's decode step (CUDA graphs on a GPU; the
same tokens, not recorded). Under ``torchrun`` every
process trains the same GPT on the same train codes and samples the same
images, so the numbers are one process's.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from tokzoo.api import Metric, MetricResult
from tokzoo.bench import judge as judges
from tokzoo.bench.fid import INCEPTION, INCEPTION_FEATURES
from tokzoo.bench.metrics import FID_DIMS, frechet_distance, load_inception
from tokzoo.data.preprocess import to_uint8
from tokzoo.errors import ConfigError, DataError, TokzooError
from tokzoo.measures import linear_probe
from tokzoo.nn.gpt import GPT, GPT_SIZES, GPTConfig, sample
from tokzoo.nn.gpt_train import GPT_PRECISIONS, RECIPE, loss_note, middle_features, nll_bits, train_gpt

#: the judge's ceiling below which gen_class_acc is flagged: a judge that misreads many real images
#: cannot say whether a sample shows its class
JUDGE_CEILING_FLAG = 0.9
PICTURE_CLASSES = 10  # samples_grid.png: one sample for each of the first classes


def positions_for(layout: str, grid: tuple[int, ...], length: int) -> str:
    """``2d`` rotary when the tokens are one per cell of a 2-D grid, ``1d`` otherwise (a sequence)."""
    if len(grid) != 2:
        return "1d"
    h, w = grid
    return "2d" if h > 1 and w > 1 and h * w == length and layout in ("grid", "hierarchical") else "1d"


def gpt_grid(grid: tuple[int, ...]) -> tuple[int, int]:
    """The GPT's (h, w): a sequence of N tokens is (1, N)."""
    return (1, grid[0]) if len(grid) == 1 else (int(grid[0]), int(grid[1]))


def gpt_positions(layout: str, grid: tuple[int, ...], length: int,
                  scales: tuple[tuple[int, int], ...] = ()) -> dict:
    """The GPT's position settings (``positions``, ``grid``, ``scales`` of
    :class:`GPTConfig`) for ``length`` tokens of codes of ``layout`` on ``grid``:
    a multi-scale layout's scales one after the other (2-D within each scale, a
    scale embedding), else :func:`positions_for`."""
    if layout == "multiscale" and scales and sum(h * w for h, w in scales) == length:
        return {"positions": "multiscale", "grid": gpt_grid(scales[-1]), "scales": tuple(scales)}
    return {"positions": positions_for(layout, grid, length), "grid": gpt_grid(grid)}


def _stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, covariance with n - 1) of feature rows, float64 where they are."""
    f = feats.double()
    return f.mean(0), torch.cov(f.T)


class ARProbe(Metric):
    """A class-conditional GPT trained on the tokens; NLL, gFID / judge, samples."""

    name = "ar-probe"
    measures_continuous = False  # a GPT on the token ids
    better = {"ar_nll_bits": "lower", "ar_nll_bits_per_token": "lower", "ar_class_bits": "higher",
              "gen_class_acc": "higher",
              "gfd_judge": "lower", "gfid": "lower", "ar_probe_top1": "higher", "judge_recon_top1": "higher"}

    def __init__(self, size: str = "tiny", steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
                 dropout: float = 0.1, train_images: int = 4096, samples: int = 0, cfg_scale: float = 2.0,
                 seed: int = 0, judge_steps: int = 1000, judge_images: int = 4096, feature_probe: bool = False,
                 precision: str = "fp32", compile: bool = False):
        if size not in GPT_SIZES:
            raise ConfigError(f"metrics.ar-probe.size: '{size}' is not one of {', '.join(GPT_SIZES)}")
        if precision not in GPT_PRECISIONS:
            raise ConfigError(f"metrics.ar-probe.precision: {str(precision)!r:.40} is not one of "
                              f"{', '.join(GPT_PRECISIONS)}")
        if not isinstance(compile, bool):
            raise ConfigError(f"metrics.ar-probe.compile: true or false, not {str(compile)!r:.40}")
        for key, v in (("steps", steps), ("batch_size", batch_size), ("train_images", train_images),
                       ("judge_steps", judge_steps), ("judge_images", judge_images)):
            if v < 1:
                raise ConfigError(f"metrics.ar-probe.{key}: must be at least 1, not {v}")
        if samples < 0:
            raise ConfigError(f"metrics.ar-probe.samples: {samples} < 0 (0: as many as images measured)")
        for key, v in (("lr", lr), ("cfg_scale", cfg_scale), ("dropout", dropout)):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"metrics.ar-probe.{key}: must be a finite number >= 0, not {v}")
        if dropout >= 1:
            raise ConfigError(f"metrics.ar-probe.dropout: must be below 1, not {dropout}")
        self.p = dict(size=size, steps=steps, batch_size=batch_size, lr=lr, dropout=dropout,
                      train_images=train_images, samples=samples, cfg_scale=cfg_scale, seed=seed,
                      judge_steps=judge_steps, judge_images=judge_images, feature_probe=feature_probe)
        self.autocast, self.compile = GPT_PRECISIONS[precision], compile
        self.state = {}

    def protocol(self):
        bf16 = {"precision": {"autocast": "bfloat16", "scope": "GPT training, NLL (its head in float32) and "
                                                               "sampling (draws in float64)"}} if self.autocast else {}
        return {**self.p, **bf16, "gpt": {**GPT_SIZES[self.p["size"]], "class_dropout": 0.1,
                                  "norm": "RMSNorm", "mlp": "SwiGLU", "head": "untied, zero-init"},
                "positions": "rotary: 2d (row, column halves of each head) when tokens are one per grid cell, "
                             "else 1d; the class prefix unrotated",
                "recipe": dict(RECIPE),
                "sampling": {"temperature": 1.0, "top_k": None, "top_p": 1.0,
                             "cfg": "uncond + scale * (cond - uncond)", "classes": "uniform, seeded",
                             "kv_cache": True},
                "nll": "teacher-forced, class-conditional, bits per image over the measured images; "
                       "ar_class_bits = NLL(null class) - NLL(true class)",
                "judge": {**judges.JUDGE_PROTOCOL, "steps": self.p["judge_steps"], "images": self.p["judge_images"]},
                "gfid": "InceptionV3 pool3 (rFID's), generated vs measured originals, when its weights are found",
                "feature_probe": "linear probe (linear-probe v2) on the middle block's features, null class, "
                                 "mean over tokens" if self.p["feature_probe"] else None}

    # -- setup: the judge and, when found, InceptionV3 ---------------------------------------------
    def setup(self, context):
        super().setup(context)
        self.device = context.device
        self.inception, self.gfid_why = None, ""
        try:
            self.inception, sha = context.network(INCEPTION, lambda: load_inception(context.weights_dir,
                                                                                    context.device, purpose="gFID"))
            self.weights = {"inception-2015-12-05": sha}
        except TokzooError as exc:
            self.gfid_why = str(exc).splitlines()[0]
        except ImportError as exc:
            self.gfid_why = f"torch-fidelity is not installed ({exc})"
        try:
            self.train = self._train_images()
        except ValueError as exc:  # e.g. data without a held-out split, all of it measured
            raise DataError(str(exc)) from None
        self.num_classes = context.num_classes or int(self.train[1].max()) + 1
        self.judge = self._judge()

    def _train_images(self) -> tuple[Tensor, Tensor]:
        """The judge's images: the first ``judge_images`` readable labelled train images, uint8, and their labels."""
        train = self.context.train_set()
        xs, ys, i = [], [], 0
        while len(xs) < self.p["judge_images"] and i < len(train):
            s = train[i]
            i += 1
            if "skipped" not in s and int(s["label"]) >= 0:  # the unlabelled ones cannot teach a class
                xs.append(to_uint8(s["image"][None])[0])
                ys.append(int(s["label"]))
        if not xs:
            raise DataError("the AR probe needs class labels (sub-folders for imagefolder): the train split has "
                            "no readable labelled image")
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    def _judge(self):
        from tokzoo.data import fingerprint

        x, y = self.train
        key = judges.cache_key(fingerprint(self.context.train_set(), self.context.dataset), x.shape[-1],
                               self.num_classes, self.p["judge_steps"], len(x))
        judge = judges.load_cached(key, self.num_classes, self.device)
        if judge is not None:
            return judge
        gen = torch.Generator().manual_seed(judges.JUDGE_PROTOCOL["seed"])

        def batch(_):
            idx = torch.randint(len(x), (64,), generator=gen)
            return x[idx], y[idx]

        with self._progress() as bar:
            task = bar.add_task("ar-probe: judge on the real train split", total=self.p["judge_steps"], note="")
            judge = judges.train_judge(batch, self.num_classes, self.p["judge_steps"], self.device,
                                       on_step=lambda s: bar.advance(task))
        judges.save_cached(key, judge)
        return judge

    def _progress(self):
        from rich import get_console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[note]}"), transient=True,
                        # a transient bar leaves a blank line where nothing can erase it (a log file, CI)
                        disable=not (self.context.show_progress and get_console().is_terminal))

    # -- streaming: the measured images' tokens, and the real side of the Fréchet distances --------
    def reset(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.real_judge: list[Tensor] = []
        self.real_correct: list[Tensor] = []
        self.recon_correct: list[Tensor] = []  # the judge on the reconstructions: a decoded sample's ceiling
        self.real_incep: list[Tensor] = []
        self.results: dict[str, Tensor] = {}
        self.pictures: dict[str, Tensor] = {}
        self.trained_on = self.unlabelled = 0
        self.n_samples = 0

    @torch.no_grad()
    def _judge_features(self, images_u8: Tensor) -> tuple[Tensor, Tensor]:
        x = images_u8.to(self.device)
        f = self.judge.features(x)
        return f.double(), self.judge.fc(f).argmax(1)

    @torch.no_grad()
    def _inception(self, images_u8: Tensor) -> Tensor:
        return self.inception(images_u8.to(self.device))[0].double()

    def update(self, originals, reconstructions, codes, batch=None):
        # kept on the device while the images stream (no host read per batch); to the host once, after
        self.ids.append(codes.token_ids())
        self.labels.append(batch["label"])
        f, pred = self._judge_features(originals)
        self.real_judge.append(f)
        self.real_correct.append((pred == batch["label"].to(pred.device)).double())
        _, pred_r = self._judge_features(reconstructions)
        self.recon_correct.append((pred_r == batch["label"].to(pred_r.device)).double())
        if self.inception is not None:  # computed once when rfid asks too
            self.real_incep.append(self.context.shared(INCEPTION_FEATURES, originals, self._inception))

    _STREAMED = ("ids", "labels", "real_judge", "real_correct", "recon_correct", "real_incep")

    def _to_host(self) -> None:
        for attr in self._STREAMED:
            parts = getattr(self, attr)
            setattr(self, attr, [torch.cat(parts).cpu()] if parts else [])

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        self._to_host()
        for attr in self._STREAMED:
            mine = torch.cat(getattr(self, attr)) if getattr(self, attr) else None
            parts = [None] * world_size
            all_gather_object(parts, mine)
            setattr(self, attr, [p for p in parts if p is not None])

    # -- compute: train the GPT, measure NLL, sample, judge ------------------------------------------
    def _measure(self):
        if not self.ids:
            raise ValueError("the AR probe measured no images")
        self._to_host()
        ids, labels = torch.cat(self.ids), torch.cat(self.labels)
        if int((labels < 0).sum()):
            raise ValueError("the AR probe needs class labels (sub-folders for imagefolder)")
        p = self.p
        tok = self.tokenizer
        # the train split's codes (encoded once, shared with the linear probe)
        parts = self.context.train_codes(tok, p["train_images"])
        train_ids = torch.cat([c.token_ids() for c, _ in parts])
        train_y = torch.cat([y for _, y in parts])
        labelled = train_y >= 0  # a train image without a class is left out (counted in the flag)
        self.unlabelled = int((~labelled).sum())
        train_ids, train_y = train_ids[labelled], train_y[labelled]
        if not len(train_y):
            raise ValueError("the AR probe's train images have no class labels (sub-folders for imagefolder)")
        self.trained_on = len(train_ids)
        vocab = parts[0][0].token_vocab_size
        spec = tok.info.codes
        L = ids.shape[1]
        num_classes = max(self.num_classes, int(labels.max()) + 1, int(train_y.max()) + 1)
        cfg = GPTConfig(vocab=vocab, length=L, num_classes=num_classes, dropout=p["dropout"],
                        **gpt_positions(spec.layout, spec.grid, L, spec.scales), **GPT_SIZES[p["size"]])
        torch.manual_seed(p["seed"])
        gpt = GPT(cfg).to(self.device)
        with self._progress() as bar:
            task = bar.add_task(f"ar-probe: GPT on {L} tokens", total=p["steps"], note="")
            train_gpt(gpt, train_ids, train_y, steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"],
                      seed=p["seed"], on_step=lambda s, loss: bar.update(task, advance=1, **loss_note(loss)),
                      autocast=self.autocast)
        # NLL of the measured images' tokens, with their class and with the null class
        bits = nll_bits(gpt, ids, labels, autocast=self.autocast)
        out = {"ar_nll_bits": float(bits.mean()), "ar_nll_bits_per_token": float(bits.mean()) / L}
        self.results["ar_nll_bits"] = bits
        # the bits the class saves the GPT: how much of the class it reads from (and writes into) the tokens
        info = nll_bits(gpt, ids, torch.full_like(labels, gpt.null_class), autocast=self.autocast) - bits
        out["ar_class_bits"] = float(info.mean())
        self.results["ar_class_bits"] = info
        # samples, through the tokenizer's own decode, judged
        n = p["samples"] or len(ids)
        self.n_samples = n
        gen = torch.Generator().manual_seed(p["seed"])
        classes = torch.randint(self.num_classes, (n,), generator=gen)
        fake_judge, correct, fake_incep = [], [], []
        sb = max(1, min(64, p["batch_size"] * 2))
        with self._progress() as bar:
            task = bar.add_task("ar-probe: sampling", total=n, note=f"cfg {p['cfg_scale']:g}")
            for s in range(0, n, sb):
                c = classes[s:s + sb]
                images = self._generate(gpt, c, gen)
                f, pred = self._judge_features(images)
                fake_judge.append(f)
                correct.append((pred == c).double())
                if self.inception is not None:
                    fake_incep.append(self._inception(images))
                bar.advance(task, len(c))
            # the picture: one sample of each of the first classes, in class order
            shown = torch.arange(min(PICTURE_CLASSES, self.num_classes))
            self.pictures["samples"] = self._generate(gpt, shown, torch.Generator().manual_seed(p["seed"] + 1))
        correct_t = torch.cat(correct)
        out["gen_class_acc"] = float(correct_t.mean())
        self.results["gen_class_acc"] = correct_t
        real_correct = torch.cat(self.real_correct)
        out["judge_top1"] = float(real_correct.mean())
        self.results["judge_top1"] = real_correct
        recon_correct = torch.cat(self.recon_correct)
        out["judge_recon_top1"] = float(recon_correct.mean())
        self.results["judge_recon_top1"] = recon_correct
        fj, rj = torch.cat(fake_judge), torch.cat(self.real_judge)
        if len(fj) >= 2 and len(rj) >= 2:
            out["gfd_judge"] = frechet_distance(*_stats(rj), *_stats(fj))
        if self.inception is not None and len(fake_incep) and sum(len(f) for f in self.real_incep) >= 2 and n >= 2:
            out["gfid"] = frechet_distance(*_stats(torch.cat(self.real_incep)), *_stats(torch.cat(fake_incep)))
        if p["feature_probe"]:
            feats = [middle_features(gpt, x, autocast=self.autocast) for x in (train_ids, ids)]
            correct_p = linear_probe(feats[0], train_y, feats[1], labels,
                                     num_classes=num_classes, per_image=True)
            out["ar_probe_top1"] = float(correct_p.mean())
            self.results["ar_probe_top1"] = correct_p
        return out

    @torch.no_grad()
    def _generate(self, gpt: GPT, classes: Tensor, gen: torch.Generator) -> Tensor:
        ids = sample(gpt, classes, cfg_scale=self.p["cfg_scale"], generator=gen, autocast=self.autocast,
                     compile=self.compile)
        return to_uint8(self.tokenizer.decode(ids.to(self.device))).cpu()

    def _flags(self) -> dict[str, str]:
        out = {}
        if self.trained_on and self.trained_on < self.p["train_images"]:
            left = (f" ({self.unlabelled} without a class left out)" if self.unlabelled else " (all there were)")
            out["ar_nll_bits"] = (f"GPT trained on {self.trained_on} images{left}, fewer than "
                                  f"metrics.ar-probe.train_images={self.p['train_images']}")
        if "judge_top1" in self.results and float(self.results["judge_top1"].mean()) < JUDGE_CEILING_FLAG:
            out["gen_class_acc"] = (f"the judge recognises {float(self.results['judge_top1'].mean()):.2f} of the "
                                    f"real measured images (below {JUDGE_CEILING_FLAG}): a sample's class is read "
                                    "unreliably")
        if (self.num_classes or 0) < 2:  # a one-class folder: right by construction, never evidence
            for k in ("gen_class_acc", "judge_top1"):
                out[k] = (f"the data has {self.num_classes or 0} class: every sample is of it, so this is 1.0 by "
                          "construction (chance is 1.0), not a measure of the tokens")
        out["gfd_judge"] = ("dataset-specific: Fréchet distance in the features of a judge trained on this "
                            "dataset; never compare with a literature gFID"
                            + (f"; N = {self.n_samples} < {judges.FEATURE_DIMS} feature dimensions (singular)"
                               if self.n_samples < judges.FEATURE_DIMS else ""))
        if self.n_samples and self.n_samples < FID_DIMS:
            out["gfid"] = (f"rank-deficient: N = {self.n_samples} < {FID_DIMS} generated images, fewer than the "
                           "Inception feature dimensions (compare only at equal N)")
        return out

    def _not_measured(self) -> dict[str, str]:
        return {"gfid": self.gfid_why} if self.gfid_why else {}

    def _per_image(self) -> dict[str, Tensor]:
        return dict(self.results)

    def _images(self) -> dict[str, Tensor]:
        return dict(self.pictures)

    def compute(self) -> MetricResult:
        values = self._measure()
        return MetricResult(values=values, flags=self._flags(), per_image=self._per_image(),
                            not_measured=self._not_measured(), images=self._images())
