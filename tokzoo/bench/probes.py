"""The linear probes as bench metrics: on features from the tokens alone
(``probe``, what a language model receives) and, separately, on the encoder's
continuous features (``probe-encoder``). The recipe is :mod:`tokzoo.measures`'."""
from __future__ import annotations

import torch
from torch import Tensor

from tokzoo.api import Latents, Metric, MetricResult, Tokenizer
from tokzoo.measures import linear_probe, pool


class LinearProbe(Metric):
    """Top-1 of a linear classifier on frozen, pooled features computed from the
    tokens alone (``Tokenizer.token_features(codes)``; train split -> val split),
    recipe in :mod:`tokzoo.measures`. On a continuous tokenizer: on its latents
    (``token_features(latents)`` when it has one, else the latents themselves),
    recorded as continuous, never a discrete competitor's number."""

    name = "probe"
    result = "probe_top1"
    better = {"probe_top1": "higher"}
    measures_continuous = True  # on the latents, recorded as such

    def setup(self, context):
        super().setup(context)
        self.train_images, self.batch_size, self.device = context.probe_train_images, context.batch_size, context.device

    def reset(self, tokenizer):
        self.tokenizer = tokenizer
        self.feats: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.correct: Tensor | None = None
        self.trained_on = self.unlabelled = 0
        self.why_not = self._unsupported(tokenizer)

    @staticmethod
    def _unsupported(tokenizer) -> str:
        """Why ``tokenizer`` offers no token features ('' when it does)."""
        if type(tokenizer).token_features is not Tokenizer.token_features:
            return ""
        if getattr(tokenizer.info, "continuous", False):
            return ""  # the latents themselves
        if hasattr(tokenizer, "probe_features"):  # written against the first contract
            return (f"{type(tokenizer).__name__} defines probe_features(images), which the contract replaced by "
                    "token_features(codes) (features from the codes alone) and encoder_features(images) "
                    "(the probe-encoder metric); see docs/plugins.md")
        return f"{type(tokenizer).__name__} has no token_features(codes)"

    @torch.no_grad()
    def _features(self, images: Tensor, codes=None) -> Tensor | None:

        if codes is None:
            codes = self.tokenizer.encode(images.to(self.device))
        f = self.tokenizer.token_features(codes)
        if f is None and isinstance(codes, Latents):
            f = codes.values  # a continuous tokenizer without token_features: its latents
        return None if f is None else pool(f)  # kept on the device until compute: no host read per batch

    def update(self, originals, reconstructions, codes, batch=None):
        if self.why_not:
            return
        f = self._features(batch["image"], codes)
        if f is None:
            self.why_not = f"{type(self.tokenizer).__name__}.token_features returned None"
            return
        self.feats.append(f)
        self.labels.append(batch["label"].cpu())

    def reduce(self, all_reduce_sum, all_gather_object, world: int) -> None:
        # features (not a declared state: their width is the tokenizer's) gathered as CPU objects after the stream
        mine = (torch.cat(self.feats).cpu() if self.feats else None, torch.cat(self.labels) if self.labels else None)
        parts = [None] * world
        all_gather_object(parts, mine)
        self.feats = [p[0] for p in parts if p[0] is not None]
        self.labels = [p[1] for p in parts if p[1] is not None]

    def _measure(self):
        if self.why_not:
            raise NotImplementedError(self.why_not)
        vx, vy = torch.cat(self.feats).cpu(), torch.cat(self.labels)  # the probe fits on the CPU (one recipe)
        if int((vy < 0).sum()):
            raise ValueError("the linear probe needs class labels (sub-folders for imagefolder)")
        tx, ty = self._train_features()
        tx, ty = torch.cat(tx).cpu(), torch.cat(ty)
        labelled = ty >= 0  # a train image without a class (a stray file in train/'s root) is left out, counted
        self.unlabelled = int((~labelled).sum())
        tx, ty = tx[labelled], ty[labelled]
        if not len(ty):
            raise ValueError("the linear probe's train images have no class labels (sub-folders for imagefolder)")
        self.trained_on = len(ty)
        self.correct = linear_probe(tx, ty, vx, vy, per_image=True)
        return {self.result: float(self.correct.double().mean())}

    def _train_features(self) -> tuple[list[Tensor], list[Tensor]]:
        """Features and labels of the train images, from their codes (encoded
        once per tokenizer, shared with other metrics through the context)."""
        tx, ty = [], []
        for codes, labels in self.context.train_codes(self.tokenizer, self.train_images):
            tx.append(self._features(None, codes.to(self.device)))
            ty.append(labels)
        return tx, ty

    def _flags(self) -> dict[str, str]:
        if self.correct is None:
            return {}
        if self.unlabelled:
            return {self.result: f"trained on {self.trained_on} images: {self.unlabelled} train images without a "
                                 "class were left out"}
        if self.trained_on < self.train_images:
            return {self.result: f"trained on {self.trained_on} images (all there were), fewer than "
                                 f"--probe-train-images {self.train_images}"}
        return {}

    def _per_image(self) -> dict[str, Tensor]:
        return {} if self.correct is None else {self.result: self.correct}

    def compute(self) -> MetricResult:
        values = self._measure()
        return MetricResult(values=values, flags=self._flags(), per_image=self._per_image())



class EncoderProbe(LinearProbe):
    """The same probe on continuous features taken *before* quantization
    (``Tokenizer.encoder_features(images)``): information the tokens may not
    carry. Its own column (``probe_encoder_top1``), never the token probe's."""

    name = "probe-encoder"
    result = "probe_encoder_top1"
    better = {"probe_encoder_top1": "higher"}
    measures_continuous = True  # encoder_features(images)

    @staticmethod
    def _unsupported(tokenizer) -> str:
        if type(tokenizer).encoder_features is not Tokenizer.encoder_features:
            return ""
        return f"{type(tokenizer).__name__} has no encoder_features(images)"

    @torch.no_grad()
    def _features(self, images: Tensor, codes=None) -> Tensor | None:

        f = self.tokenizer.encoder_features(images.to(self.device))
        return None if f is None else pool(f)

    def _train_features(self) -> tuple[list[Tensor], list[Tensor]]:
        from tokzoo.data import collate

        tx, ty = [], []
        train_set = self.context.train_set()
        n = min(self.train_images, len(train_set))
        for start in range(0, n, self.batch_size):
            batch = collate([train_set[i] for i in range(start, min(n, start + self.batch_size))])
            if "image" in batch:
                tx.append(self._features(batch["image"]))
                ty.append(batch["label"])
        return tx, ty


# -- throughput -----------------------------------------------------------------------
