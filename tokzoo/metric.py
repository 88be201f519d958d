"""The bench's side of the contract: what the host gives every metric
(:class:`BenchContext`) and what a metric implements (:class:`Metric`).
Importable from :mod:`tokzoo.api`, with the rest of the contract."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import Tensor

from tokzoo.codes import Codes

#: a tokzoo.api.Tokenizer (named, not imported: the contract's components sit above this module)
Tokenizer = Any

__all__ = ["BenchContext", "Metric"]


# -----------------------------------------------------------------------------
# Benchmark metrics
# -----------------------------------------------------------------------------
@dataclass
class BenchContext:
    """What the bench host gives every metric through :meth:`Metric.setup`
    (never as config parameters: those are the metric's own, e.g. LPIPS's ``net``).

    - ``device``: where the tokenizer runs;
    - ``weights_dir``: the ``--weights-dir`` folder (see :mod:`tokzoo.weights`);
    - ``batch_size``: the bench batch size;
    - ``num_images``: how many images are measured;
    - ``probe_train_images``: how many train-split images a probe may use;
    - ``num_classes``: the dataset's class count (``num_classes`` of the
      dataset; None when it does not say);
    - ``dataset``: the measured images' fingerprint (keys caches of what is
      computed from the data alone);
    - ``show_progress``: whether this process draws progress bars (the
      first process of a ``torchrun`` bench does);
    - :meth:`train_set`: the dataset's ``train`` split (built on first call);
      for data without a held-out split (``same_for_every_split``), the
      images after the ``num_images`` measured ones;
    - :meth:`train_codes`: the first train images encoded by the tokenizer,
      once per bench of a tokenizer (the probes share them), and
      :meth:`train_attributes`: those images' ``attributes``.
    """

    device: Any = "cpu"
    weights_dir: str | None = None
    batch_size: int = 32
    num_images: int = 0
    probe_train_images: int = 1024
    train_split: Any = None  # a zero-argument callable returning the train split
    num_classes: int | None = None
    dataset: str = ""
    show_progress: bool = True
    _train: Any = field(default=None, repr=False)
    _codes: Any = field(default=None, repr=False)

    def train_set(self):
        """The dataset's ``train`` split (samples as in ``tokzoo_register_datasets``)."""
        if self._train is None:
            if self.train_split is None:
                raise ValueError("this bench has no train split")
            self._train = self.train_split()
        return self._train

    def train_codes(self, tokenizer: "Tokenizer", n: int) -> list[tuple[Codes, Tensor]]:
        """The first ``n`` readable images of :meth:`train_set` (fewer when it has
        fewer) encoded by ``tokenizer``: batches of (:class:`Codes` on the CPU, or a
        continuous tokenizer's :class:`Latents`, labels). Encoded once: a later
        call for as many or fewer reuses them."""
        return [(codes, labels) for codes, labels, _ in self._encoded(tokenizer, n)]

    def train_attributes(self, tokenizer: "Tokenizer", n: int) -> list[dict[str, Any]]:
        """The ``attributes`` (``{}`` where a sample has none) of the images
        :meth:`train_codes` ``(tokenizer, n)`` gives, in the same order."""
        return [a for _, _, attrs in self._encoded(tokenizer, n) for a in attrs]

    @torch.no_grad()
    def _encoded(self, tokenizer: "Tokenizer", n: int) -> list[tuple[Codes, Tensor, list[dict]]]:
        cached = self._codes if self._codes and self._codes[0] is tokenizer else None
        if cached and (cached[1] >= n or cached[2]):
            out, left = [], n
            for codes, labels, attrs in cached[3]:
                if left <= 0:
                    break
                k = min(left, len(labels))
                out.append((codes.head(k), labels[:k], attrs[:k]))
                left -= k
            return out
        train = self.train_set()
        batches, count, index = [], 0, 0
        tokenizer.eval()
        while count < n and index < len(train):
            samples = []
            while len(samples) < min(self.batch_size, n - count) and index < len(train):
                s = train[index]
                index += 1
                if "skipped" not in s:
                    samples.append(s)
            if not samples:
                break
            images = torch.stack([s["image"] for s in samples]).to(self.device)
            labels = torch.tensor([s["label"] for s in samples], dtype=torch.long)
            attrs = [dict(s.get("attributes") or {}) for s in samples]
            batches.append((tokenizer.encode(images).to("cpu"), labels, attrs))
            count += len(samples)
        self._codes = (tokenizer, count, count < n, batches)  # (.., exhausted?: all there were)
        return batches


class Metric(abc.ABC):
    """A streaming benchmark metric.

    The host calls :meth:`setup` once (with a :class:`BenchContext`), then per
    tokenizer :meth:`reset`, :meth:`update` for every batch, :meth:`reduce`
    under ``torchrun``, and :meth:`compute`. ``update`` sees each batch once:
    originals and reconstructions as uint8 tensors ``[B,3,H,W]`` (quantized, as
    a saved image would be), the tokenizer's :class:`Codes` (:class:`Latents`
    for a continuous tokenizer, only to a metric that declares
    :attr:`measures_continuous`), and the batch
    itself (``image`` in ``[0,1]``, ``label``, ``caption``, and the host's
    ``encode_s`` / ``decode_s`` timings and ``warmup`` flag). ``compute``
    returns named float results; ``better`` says, per result, whether
    ``higher`` or ``lower`` is better (results not named there are
    informational). ``weights`` maps each pretrained file the metric used to
    its SHA-256 (recorded in the protocol). A metric that cannot run (a missing
    weights file) raises a :class:`tokzoo.errors.TokzooError` from ``setup``:
    it is reported unavailable, with that message, and the rest runs.
    """

    name: str = "metric"
    #: "lower" or "higher": which direction is better, per result key (read-only
    #: when declared on the class; an instance may set its own in setup/reset)
    better: Mapping[str, str] = MappingProxyType({})
    #: pretrained file -> SHA-256, recorded in the protocol (as ``better``)
    weights: Mapping[str, str] = MappingProxyType({})
    #: True when the metric also measures a *continuous* tokenizer, whose
    #: ``update`` gets :class:`tokzoo.api.Latents` instead of Codes (it reads only
    #: the images, or handles latents). False: n/a on a continuous row, with the reason
    measures_continuous: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr in ("better", "weights"):  # a class-level dict would be shared, and changed, by every instance
            value = cls.__dict__.get(attr)
            if isinstance(value, dict):
                setattr(cls, attr, MappingProxyType(dict(value)))
    #: state that adds up across batches and processes (reduced by summing)
    state: dict[str, Tensor]

    def setup(self, context: BenchContext) -> None:
        """Once, before the first tokenizer: load networks and weights here."""
        self.context = context

    @abc.abstractmethod
    def reset(self, tokenizer: Tokenizer) -> None:
        """Start measuring ``tokenizer`` (forget the previous one's state)."""

    @abc.abstractmethod
    def update(self, originals: Tensor, reconstructions: Tensor, codes: Codes, batch: dict) -> None:
        """One batch: uint8 ``[B,3,H,W]`` originals and reconstructions, codes, the batch."""

    @abc.abstractmethod
    def compute(self) -> dict[str, float]:
        """Named results (after :meth:`reduce` when several processes measured)."""

    def flags(self) -> dict[str, str]:
        """After :meth:`compute`: result name -> why that number may mislead
        (e.g. ``{"rfid": "rank-deficient: N = 16 < 2048 ..."}``). Every output
        marks a flagged number with ``†`` and prints the reason. Default: none."""
        return {}

    def per_image_values(self) -> dict[str, Tensor]:
        """After :meth:`compute`: result name -> the per-image values ``[N]`` whose
        mean the result is (all processes' images after :meth:`reduce`). The
        host gives each such result a bootstrap 95 % interval. Default: none."""
        return {}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """After :meth:`compute`: result name -> ``(lo, hi)``, a 95 % interval the
        metric computes itself, for a result that is not a mean over images
        (resample the images with replacement, recompute, e.g. with
        :func:`tokzoo.api.resample_counts` and :func:`tokzoo.api.resample_interval`,
        as codebook usage and rFID do). ``compare`` judges a change against it.
        Default: none (a result in :meth:`per_image_values` gets one from the host)."""
        return {}

    def protocol(self) -> dict[str, Any]:
        """Every setting this metric's numbers depend on (its parameters, its
        recipe), recorded in results.json's protocol under ``metrics.<name>``:
        results measured under other settings are never compared with these.
        Called without :meth:`setup`. Default: nothing beyond the name."""
        return {}

    def not_measured(self) -> dict[str, str]:
        """After :meth:`compute`: result name -> why this metric could not give
        that result this time (e.g. ``{"gfid": "weights file ... not found"}``),
        reported like an unavailable metric while its other results stand. Default: none."""
        return {}

    def images(self) -> dict[str, Tensor]:
        """After :meth:`compute`: picture name -> uint8 images ``[n,3,H,W]`` to
        show, one row per tokenizer (e.g. ``{"samples": ...}`` becomes
        ``samples_grid.png`` and a section of report.html). Default: none."""
        return {}

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        """Combine the processes' states under ``torchrun``. The default sums
        every tensor of ``self.state`` in place with ``all_reduce_sum(tensor)``;
        a metric with other state overrides this (``all_gather_object(list,
        obj)`` gathers any picklable object)."""
        for key in sorted(getattr(self, "state", {}) or {}):
            all_reduce_sum(self.state[key])

    def reference_identity(self) -> str | None:
        """For a metric whose state on the *originals* alone may be cached across
        runs (rFID's reference statistics): a string identifying how it is
        computed (e.g. the extractor's SHA-256). The host adds the dataset
        fingerprint, images, resolution and protocol. None: nothing cached."""
        return None

    def reference_state(self) -> dict[str, Tensor]:
        """The cacheable state computed from the originals (see :meth:`reference_identity`)."""
        return {}

    def load_reference(self, state: dict[str, Tensor]) -> None:
        """Use a cached reference state instead of computing it again."""
