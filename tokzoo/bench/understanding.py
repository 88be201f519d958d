"""``vqa-probe``: understanding in miniature. Questions about each image (what
shape, what colour, where, how large, on what background: the dataset's
``attributes``) are answered from the image's tokens alone by a small
transformer (the AR probe's GPT, :mod:`tokzoo.nn.gpt`, in its prefix mode),
the same model and budget for every tokenizer.

- **Input**, as an understanding model receives the image: ``features``
  (default) ``token_features(codes)``, standardised with the train split's
  mean and std per channel, through a learned linear projector (the LLaVA /
  VILA-U way); or ``ids``, fresh embeddings of ``Codes.token_ids()`` (the
  sequence a language model would read).
- **Questions**: one question token per attribute (a learned embedding),
  after the image; each question sees the image tokens and itself, never
  another question, so the answers are those of separate ``[image,
  question]`` sequences. The answer is read at the question's position and
  chosen among that attribute's values (seen in the train split).
- **Training**: all questions of an image at once, cross-entropy summed over
  the questions asked, ``steps`` batches of ``batch_size`` train images
  (the first ``train_images`` of the train split), the probes' recipe
  (:data:`tokzoo.nn.gpt.RECIPE`), seeded.
- **Results**: ``vqa_<attribute>``, the accuracy on the measured images that
  carry the attribute, with a bootstrap interval; ``vqa_top1``, the mean over
  the questions; ``vqa_<attribute>_chance``: the accuracy of always giving
  the train split's most frequent answer (what tokens that carry nothing
  score). ``first_level=true`` also asks the questions of the first level
  alone (``vqa_first_...``): a hierarchical tokenizer's parent (semantic)
  codes, a residual one's coarsest level.

Under ``torchrun`` every process trains the same model on the same train
codes and answers for all the measured images, so the numbers are one
process's.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokzoo.api import Codes, Metric, MetricResult
from tokzoo.bench.generation import gpt_positions
from tokzoo.errors import ConfigError, DataError
from tokzoo.nn.gpt import GPT, GPT_SIZES, GPTConfig
from tokzoo.nn.gpt_train import RECIPE, fit, loss_note

INPUTS = ("features", "ids")
#: attribute names that become result names (``vqa_<name>``): others are left out, with the reason
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def first_level(codes: Codes) -> Codes | None:
    """The first level of ``codes`` alone, as a ``grid`` or ``sequence`` (None: one level only)."""
    if len(codes.levels) < 2:
        return None
    name = next(iter(codes.levels))
    return Codes({name: codes.levels[name]}, {name: codes.vocab[name]}, "grid" if codes.levels[name].dim() == 3
                 else "sequence")


def _sequence(features: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Token features ``[B,C,h,w]``, ``[B,N,C]`` or ``[B,C]`` -> (``[B,T,C]``, grid or (1, T))."""
    f = features.float()
    if f.dim() == 4:
        return f.flatten(2).transpose(1, 2), (int(f.shape[2]), int(f.shape[3]))
    if f.dim() == 3:
        return f, (1, int(f.shape[1]))
    if f.dim() == 2:
        return f[:, None], (1, 1)
    raise ValueError(f"token_features returned a tensor of shape {tuple(f.shape)}")


class QuestionModel(nn.Module):
    """Image tokens (projected features or id embeddings) -> one answer per question."""

    def __init__(self, cfg: GPTConfig, feature_dim: int | None, answers: list[int]):
        super().__init__()
        self.gpt = GPT(cfg)
        self.project = nn.Linear(feature_dim, cfg.width) if feature_dim else None
        self.answers = list(answers)
        self.head = nn.Linear(cfg.width, sum(answers))
        nn.init.zeros_(self.head.weight)  # untrained: every answer equally likely
        nn.init.zeros_(self.head.bias)
        offsets = torch.tensor([0, *answers]).cumsum(0)
        valid = torch.zeros(len(answers), sum(answers), dtype=torch.bool)
        for q, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
            valid[q, a:b] = True
        self.register_buffer("valid", valid, persistent=False)  # [K, A]: question q's answers
        self.register_buffer("offsets", offsets[:-1], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, K, A]`` (answers of other questions at -inf) for inputs
        ``x``: features ``[B, L, C]`` or token ids ``[B, L]``."""
        prefix = self.project(x) if self.project is not None else self.gpt.embed_tokens(x)
        h = self.gpt.prefix_hidden(prefix, torch.arange(len(self.answers), device=prefix.device))
        return self.head(h).masked_fill(~self.valid, float("-inf"))

    def loss(self, x: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy over the asked questions (``targets [B, K]``: the answer's
        index within its question, -1 where not asked), summed over questions, mean over images."""
        logits = self.forward(x)
        asked = targets >= 0
        flat = torch.where(asked, targets + self.offsets, torch.zeros_like(targets))
        ce = F.cross_entropy(logits.flatten(0, 1).float(), flat.flatten(), reduction="none").view_as(targets)
        return (ce * asked).sum() / max(1, len(x))

    @torch.no_grad()
    def answer(self, x: Tensor, batch_size: int = 128) -> Tensor:
        """The chosen answer's index within each question ``[N, K]``."""
        self.eval()
        dev = self.head.weight.device
        out = [(self.forward(x[s:s + batch_size].to(dev)).argmax(-1) - self.offsets).cpu()
               for s in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.answers), dtype=torch.long)


class VQAProbe(Metric):
    """Questions about each image's attributes, answered from its tokens; accuracy per attribute."""

    name = "vqa-probe"
    measures_continuous = False  # questions from the tokens

    def __init__(self, size: str = "tiny", steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
                 dropout: float = 0.1, train_images: int = 4096, seed: int = 0, input: str = "features",
                 first_level: bool = False, max_answers: int = 64):
        if size not in GPT_SIZES:
            raise ConfigError(f"metrics.vqa-probe.size: '{size}' is not one of {', '.join(GPT_SIZES)}")
        if input not in INPUTS:
            raise ConfigError(f"metrics.vqa-probe.input: '{input}' is not one of {', '.join(INPUTS)}")
        for key, v in (("steps", steps), ("batch_size", batch_size), ("train_images", train_images)):
            if v < 1:
                raise ConfigError(f"metrics.vqa-probe.{key}: must be at least 1, not {v}")
        if max_answers < 2:
            raise ConfigError(f"metrics.vqa-probe.max_answers: must be at least 2, not {max_answers}")
        for key, v in (("lr", lr), ("dropout", dropout)):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"metrics.vqa-probe.{key}: must be a finite number >= 0, not {v}")
        if dropout >= 1:
            raise ConfigError(f"metrics.vqa-probe.dropout: must be below 1, not {dropout}")
        self.p = dict(size=size, steps=steps, batch_size=batch_size, lr=lr, dropout=dropout,
                      train_images=train_images, seed=seed, input=input, first_level=bool(first_level),
                      max_answers=max_answers)
        self.better = {}

    def protocol(self) -> dict[str, Any]:
        return {**self.p, "gpt": {**GPT_SIZES[self.p["size"]], "norm": "RMSNorm", "mlp": "SwiGLU"},
                "input": {"features": "token_features(codes), standardised per channel (train mean, std), "
                                      "linear projector", "ids": "fresh embeddings of Codes.token_ids()"}[self.p["input"]],
                "positions": "rotary: 2d when the image tokens are a grid, else 1d; the questions unrotated",
                "questions": "one token per attribute after the image tokens; each attends to the image tokens "
                             "and itself (prefix mode); the answer read at its position, among the attribute's "
                             "values in the train split",
                "loss": "cross-entropy summed over the questions asked, mean over images",
                "recipe": dict(RECIPE),
                "chance": "accuracy of the train split's most frequent answer",
                "first_level": "also the first level of the codes alone (vqa_first_*)" if self.p["first_level"]
                               else None}

    # -- setup: does the data ask anything? -----------------------------------------------------
    def setup(self, context):
        super().setup(context)
        self.device = context.device
        try:
            train = context.train_set()
        except ValueError as exc:  # data without a held-out split, all of it measured
            raise DataError(str(exc)) from None
        declared = getattr(train, "attributes", None)
        self.declared = {str(k): [str(v) for v in vs] for k, vs in dict(declared or {}).items()}
        if not self.declared:
            seen = [train[i] for i in range(min(16, len(train)))]
            if not any(s.get("attributes") for s in seen if "skipped" not in s):
                raise DataError("the dataset gives no attributes to ask about (its samples have no "
                                "'attributes'; imagefolder gives 'class' for images in class folders)")

    # -- streaming: the measured images' codes and attributes ------------------------------------
    def reset(self, tokenizer):
        self.tokenizer = tokenizer
        self.codes: list[Codes] = []
        self.attrs: list[dict] = []
        self.correct: dict[str, Tensor] = {}
        self.better: dict[str, str] = {}
        self.why: dict[str, str] = {}
        self.trained_on = 0

    def update(self, originals, reconstructions, codes, batch=None):
        self.codes.append(codes)  # on the device while the images stream; to the host once, after
        attrs = (batch or {}).get("attributes") or [{}] * codes.batch_size
        self.attrs += [dict(a or {}) for a in attrs]

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        self.codes = [c.to("cpu") for c in self.codes]
        parts = [None] * world_size
        all_gather_object(parts, (self.codes, self.attrs))
        self.codes = [c for p in parts for c in p[0]]
        self.attrs = [a for p in parts for a in p[1]]

    # -- compute: the questions, the model, the answers ------------------------------------------
    def _questions(self, train_attrs: list[dict]) -> list[tuple[str, list[str]]]:
        """(attribute, its answers) to ask: the dataset's order, then any other name seen."""
        names = list(self.declared) + sorted({k for a in train_attrs for k in a} - set(self.declared))
        out = []
        for name in names:
            if not NAME.fullmatch(name):
                self.why[f"vqa-probe attribute {name[:40]!r}"] = ("not asked: attribute names are lower-case "
                                                                   "letters, digits and '_' (at most 32)")
                continue
            if name == "top1" or name.endswith(("_chance", "_lo95", "_hi95")):
                self.why[f"vqa-probe attribute {name!r}"] = (
                    "not asked: its result would be named like one the probe builds for another (vqa_top1 is the "
                    "mean over questions; vqa_<attribute>_chance, _lo95, _hi95 belong to an attribute)")
                continue
            seen = {str(a[name]) for a in train_attrs if name in a}
            if not seen:
                continue  # declared, but no train image carries it
            answers = [v for v in self.declared.get(name, []) if v in seen] + sorted(seen - set(self.declared.get(name, [])))
            if len(answers) > self.p["max_answers"]:
                self.why[f"vqa_{name}"] = (f"not asked: {len(answers)} different answers in the train split, more "
                                           f"than metrics.vqa-probe.max_answers={self.p['max_answers']}")
            elif len(answers) < 2:
                self.why[f"vqa_{name}"] = f"not asked: every train image gives the same answer ({answers[0]!r})"
            else:
                out.append((name, answers))
        return out

    @staticmethod
    def _targets(attrs: list[dict], questions: list[tuple[str, list[str]]]) -> tuple[Tensor, Tensor]:
        """(answer index ``[N, K]``, -1 where not asked or not a train answer; asked ``[N, K]``)."""
        index = [{v: i for i, v in enumerate(ans)} for _, ans in questions]
        t = torch.full((len(attrs), len(questions)), -1, dtype=torch.long)
        asked = torch.zeros(len(attrs), len(questions), dtype=torch.bool)
        for i, a in enumerate(attrs):
            for q, (name, _) in enumerate(questions):
                if name in a:
                    asked[i, q] = True
                    t[i, q] = index[q].get(str(a[name]), -1)
        return t, asked

    @torch.no_grad()
    def _inputs(self, parts: list[Codes]) -> tuple[Tensor, dict, int]:
        """The model's inputs for batches of codes: (``[N, L, C]`` features or
        ``[N, L]`` ids, their shape: layout, grid and scales, token vocabulary)."""
        if self.p["input"] == "ids":
            ids = torch.cat([c.token_ids() for c in parts])
            first = parts[0]
            return ids, {"layout": first.layout, "grid": first.grid, "scales": first.scales}, first.token_vocab_size
        feats, grid = [], (1, 1)
        for c in parts:
            f = self.tokenizer.token_features(c.to(self.device))
            if f is None:
                raise NotImplementedError(f"{type(self.tokenizer).__name__}.token_features returned None "
                                          "(use metrics.vqa-probe.input=ids)")
            seq, grid = _sequence(f)
            feats.append(seq.cpu())
        return torch.cat(feats), {"layout": "grid", "grid": grid, "scales": ()}, 1

    def _measure(self):
        if not self.codes:
            raise ValueError("the VQA probe measured no images")
        self.codes = [c.to("cpu") for c in self.codes]
        p = self.p
        parts = self.context.train_codes(self.tokenizer, p["train_images"])
        train_attrs = self.context.train_attributes(self.tokenizer, p["train_images"])
        self.trained_on = len(train_attrs)
        questions = self._questions(train_attrs)
        if not questions:
            raise ValueError("no question to ask: " + ("; ".join(f"{k}: {v}" for k, v in self.why.items())
                                                       or "the train images carry no attributes"))
        self.questions = questions
        views = [("vqa_", lambda c: c)]
        if p["first_level"]:
            if first_level(parts[0][0]) is None:
                self.why["vqa_first_top1"] = "the tokens have one level: the first level is all of them"
            else:
                views.append(("vqa_first_", first_level))
        out: dict[str, float] = {}
        train_t, _ = self._targets(train_attrs, questions)
        test_t, asked = self._targets(self.attrs, questions)
        for prefix, view in views:
            try:
                train_x, shape, vocab = self._inputs([view(c) for c, _ in parts])
                test_x, _, _ = self._inputs([view(c) for c in self.codes])
            except (NotImplementedError, TypeError, KeyError, RuntimeError, ValueError) as exc:
                if prefix == "vqa_":
                    raise NotImplementedError(str(exc).splitlines()[0] or type(exc).__name__) from None
                self.why[prefix + "top1"] = f"failed on the first level alone: {str(exc).splitlines()[0]}"
                continue
            answers = self._fit_and_answer(train_x, train_t, test_x, shape, vocab, prefix)
            out.update(self._score(prefix, answers, test_t, asked, train_t))
        return out

    def _fit_and_answer(self, train_x: Tensor, train_t: Tensor, test_x: Tensor, shape: dict, vocab: int,
                        prefix: str) -> Tensor:
        p = self.p
        ids = p["input"] == "ids"
        if not ids:  # standardised with the train split's statistics, per channel
            mean = train_x.double().mean((0, 1))
            std = train_x.double().std((0, 1)).clamp(min=1e-6)
            train_x = ((train_x - mean) / std).float()
            test_x = ((test_x - mean) / std).float()
        L = train_x.shape[1]
        cfg = GPTConfig(vocab=vocab, length=L, num_classes=len(self.questions), dropout=p["dropout"],
                        **gpt_positions(shape["layout"], shape["grid"], L, shape["scales"]), **GPT_SIZES[p["size"]])
        torch.manual_seed(p["seed"])
        model = QuestionModel(cfg, None if ids else train_x.shape[2], [len(a) for _, a in self.questions])
        model.to(self.device)
        dev = self.device

        def loss_at(gen: torch.Generator) -> Tensor:
            idx = torch.randint(len(train_x), (p["batch_size"],), generator=gen)
            return model.loss(train_x[idx].to(dev), train_t[idx].to(dev))

        from rich import get_console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[note]}"), transient=True,
                      disable=not (self.context.show_progress and get_console().is_terminal)) as bar:
            what = "first level" if prefix != "vqa_" else f"{len(self.questions)} questions"
            task = bar.add_task(f"vqa-probe: {what} on {L} tokens", total=p["steps"], note="")
            fit(model, loss_at, steps=p["steps"], lr=p["lr"], seed=p["seed"],
                on_step=lambda s, loss: bar.update(task, advance=1, **loss_note(loss)))
        return model.answer(test_x)

    def _score(self, prefix: str, answers: Tensor, targets: Tensor, asked: Tensor, train_t: Tensor) -> dict[str, float]:
        """Accuracy per question (and chance), and the mean over questions, with per-image values."""
        out: dict[str, float] = {}
        right = (answers == targets) & asked & (targets >= 0)
        K = len(self.questions)
        N = len(targets)
        top1 = torch.zeros(N, dtype=torch.float64)
        for q, (name, ans) in enumerate(self.questions):
            n_q = int(asked[:, q].sum())
            if not n_q:
                self.why[f"{prefix}{name}"] = "no measured image carries this attribute"
                continue
            key = f"{prefix}{name}"
            self.correct[key] = right[asked[:, q], q].double()
            out[key] = float(self.correct[key].mean())
            self.better[key] = "higher"
            counts = torch.bincount(train_t[:, q][train_t[:, q] >= 0], minlength=len(ans))
            out[f"{key}_chance"] = float((targets[asked[:, q], q] == int(counts.argmax())).double().mean())
            # vqa_top1 per image, weighted so its mean is the mean over questions of their accuracies
            top1 += right[:, q].double() * N / (n_q * K)
        scored = [f"{prefix}{name}" for name, _ in self.questions if f"{prefix}{name}" in out]
        if scored:
            top1 *= K / len(scored)
            out[f"{prefix}top1"] = sum(out[k] for k in scored) / len(scored)
            self.correct[f"{prefix}top1"] = top1
            self.better[f"{prefix}top1"] = "higher"
        return out

    def _flags(self) -> dict[str, str]:
        if self.trained_on and self.trained_on < self.p["train_images"]:
            return {"vqa_top1": f"trained on {self.trained_on} images (all there were), fewer than "
                                f"metrics.vqa-probe.train_images={self.p['train_images']}"}
        return {}

    def _not_measured(self) -> dict[str, str]:
        return dict(self.why)

    def _per_image(self) -> dict[str, Tensor]:
        return dict(self.correct)

    def compute(self) -> MetricResult:
        values = self._measure()
        return MetricResult(values=values, flags=self._flags(), per_image=self._per_image(),
                            not_measured=self._not_measured())
