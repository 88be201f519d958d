"""The bench's side of the contract: what the host gives every metric
(:class:`BenchContext`) and what a metric implements (:class:`Metric`).
Importable from :mod:`tokzoo.api`, with the rest of the contract."""
from __future__ import annotations

import abc
import itertools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from tokzoo.codes import Codes
from tokzoo.device import autocast_to

#: a tokzoo.api.Tokenizer (named, not imported: the contract's components sit above this module)
Tokenizer = Any

__all__ = ["BenchContext", "Metric", "MetricResult", "REDUCTIONS", "merge_shards"]


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
    - ``autocast``: the dtype the tokenizer's encode and decode run in
      (``--precision bf16``: ``torch.bfloat16``; None: float32), which
      :meth:`train_codes` follows too;
    - :meth:`train_set`: the dataset's ``train`` split (built on first call);
      for data without a held-out split (``same_for_every_split``), the
      images after the ``num_images`` measured ones;
    - :meth:`train_codes`: the first train images encoded by the tokenizer,
      once per bench of a tokenizer (the probes share them), and
      :meth:`train_attributes`: those images' ``attributes``;
    - :meth:`network` and :meth:`shared`: a network several metrics use, loaded
      once, and what it computes from a batch, computed once (InceptionV3 on
      the originals, for ``rfid`` and the AR probe's gFID).
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
    autocast: Any = None  # a torch dtype: the tokenizer's encode and decode under torch.autocast
    _train: Any = field(default=None, repr=False)
    _codes: Any = field(default=None, repr=False)
    _networks: dict = field(default_factory=dict, repr=False)
    _batch: dict = field(default_factory=dict, repr=False)

    def network(self, key: str, load: Callable[[], Any]) -> Any:
        """What ``load()`` returns, loaded once for every metric that asks with
        ``key`` (name the file and its version in it, e.g. ``"inception-2015-12-05"``)."""
        if key not in self._networks:
            self._networks[key] = load()
        return self._networks[key]

    def shared(self, key: str, images: Tensor, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """``compute(images)``, computed once per batch for every metric that asks
        with ``key`` and the very same ``images`` tensor (the batch's originals):
        name the computation in ``key`` (network, layer, dtype)."""
        held = self._batch.get(key)
        if held is None or held[0] is not images:
            held = self._batch[key] = (images, compute(images))
        return held[1]

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
            with autocast_to(torch.device(self.device), self.autocast):
                codes = tokenizer.encode(images)
            batches.append((codes.to("cpu"), labels, attrs))
            count += len(samples)
        self._codes = (tokenizer, count, count < n, batches)  # (.., exhausted?: all there were)
        return batches


#: how a declared state combines across the processes of a ``torchrun`` bench
REDUCTIONS = ("sum", "max", "min", "cat")


@dataclass(eq=False)
class MetricResult(Mapping):
    """What :meth:`Metric.compute` returns: everything about one tokenizer's
    numbers at once, so nothing depends on the order the host asks in.

    - ``values``: result name -> a finite float;
    - ``per_image``: result name -> the per-image values ``[N]`` whose mean the
      result is; the host gives it a bootstrap 95 % interval;
    - ``intervals``: result name -> ``(lo, hi)``, a 95 % interval the metric
      computes itself for a result that is not a mean over images;
    - ``flags``: result name -> why that number may mislead (marked ``†``);
    - ``not_measured``: result name -> why it could not be given this time
      while the others stand;
    - ``images``: picture name -> uint8 images ``[n,3,H,W]`` to show.

    It reads as the mapping of its ``values`` (``result["psnr"]``, ``set(result)``,
    ``result == {...}``).
    """

    values: dict[str, float]
    per_image: dict[str, Tensor] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)
    images: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def __iter__(self):
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


class Metric(abc.ABC):
    """A streaming benchmark metric, shaped like a torchmetrics ``Metric``.

    State is declared with :meth:`add_state` (a tensor and how it combines
    across processes: ``sum``, ``max``, ``min`` or ``cat``) and lives on the
    metric's :attr:`device` (the bench's), in ``self.state[name]``. The host
    calls :meth:`setup` once (with a :class:`BenchContext`), then per tokenizer
    puts every declared state back to its default and calls :meth:`reset`,
    :meth:`update` for every batch, combines every declared state across the
    processes of a ``torchrun`` bench on the device (then :meth:`reduce`, for
    state that is not a tensor), and :meth:`compute`. ``update`` sees each batch
    once: originals and reconstructions as uint8 tensors ``[B,3,H,W]`` on the
    device (quantized, as a saved image would be), the tokenizer's
    :class:`Codes` (:class:`Latents` for a continuous tokenizer, only to a
    metric that declares :attr:`measures_continuous`), and the batch itself
    (``image`` in ``[0,1]``, ``label``, ``index``, ``caption``, and the host's
    ``encode_s`` / ``decode_s`` timings and ``warmup`` flag). ``compute``
    returns a :class:`MetricResult` (or a plain dict of named floats: the
    values alone); ``better`` says, per result, whether ``higher`` or
    ``lower`` is better (results not named there are informational).
    ``weights`` maps each pretrained file the metric used to its SHA-256
    (recorded in the protocol). A metric that cannot run (a missing weights
    file) raises a :class:`tokzoo.errors.TokzooError` from ``setup``: it is
    reported unavailable, with that message, and the rest runs.
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

    #: the current values of the declared states (a ``cat`` state: the list of
    #: tensors appended so far; after the host's reduce, one tensor in that list)
    state: dict[str, Any]

    def add_state(self, name: str, default: Tensor, reduce: str = "sum") -> None:
        """Declare a state (in ``__init__`` or :meth:`setup`): ``default`` a tensor
        (for ``cat``, an empty one ``[0, ...]`` giving the dtype and trailing shape
        of what is appended). The host puts it on :attr:`device` before each
        tokenizer and combines it across processes: ``sum``, ``max``, ``min``
        elementwise, ``cat`` by concatenating every process's tensors along dim 0
        in process order (rank 0 first). Read a ``cat`` state with :meth:`cat_state`."""
        if reduce not in REDUCTIONS:
            raise ValueError(f"add_state({name!r}): reduce must be one of {', '.join(REDUCTIONS)}, not {reduce!r}")
        if not isinstance(default, Tensor) or (reduce == "cat" and (default.dim() == 0 or len(default))):
            raise ValueError(f"add_state({name!r}): the default must be a tensor"
                             + (" with no rows ([0, ...]) for 'cat'" if reduce == "cat" else ""))
        self.__dict__.setdefault("_declared", {})[name] = (default.detach().clone(), reduce)
        self.__dict__.setdefault("state", {})
        self._default_state(name)

    def declared_states(self) -> dict[str, str]:
        """State name -> its reduction, as declared with :meth:`add_state`."""
        return {k: r for k, (_, r) in self.__dict__.get("_declared", {}).items()}

    @property
    def device(self) -> torch.device:
        """Where the state lives: the bench's device after :meth:`setup` (or what a
        metric sets), else the CPU."""
        context = self.__dict__.get("context")
        own = self.__dict__.get("_device")
        return torch.device(own if own is not None else context.device if context is not None else "cpu")

    @device.setter
    def device(self, value) -> None:
        self.__dict__["_device"] = value

    def reset_states(self) -> None:
        """Every declared state back to its default, on :attr:`device` (the host calls this before :meth:`reset`)."""
        for name in self.__dict__.get("_declared", {}):
            self._default_state(name)

    def _default_state(self, name: str) -> None:
        default, reduce = self.__dict__["_declared"][name]
        if not isinstance(self.__dict__.get("state"), dict):
            self.state = {}
        self.state[name] = [] if reduce == "cat" else default.to(self.device, copy=True)

    def cat_state(self, name: str) -> Tensor:
        """A ``cat`` state as one tensor (its declared empty default when nothing was appended)."""
        default, _ = self.__dict__["_declared"][name]
        parts = self.state[name]
        return torch.cat(parts) if parts else default.to(self.device)

    def setup(self, context: BenchContext) -> None:
        """Once, before the first tokenizer: load networks and weights here."""
        self.context = context

    def reset(self, tokenizer: Tokenizer = None) -> None:
        """Start measuring ``tokenizer``: declared states are already back to their
        defaults; reset anything else here (read ``tokenizer.info``). Default: nothing."""

    @abc.abstractmethod
    def update(self, originals: Tensor, reconstructions: Tensor, codes: Codes, batch: dict) -> None:
        """One batch: uint8 ``[B,3,H,W]`` originals and reconstructions, codes, the batch."""

    @abc.abstractmethod
    def compute(self) -> "MetricResult | dict[str, float]":
        """This tokenizer's results, after every process's state was combined:
        a :class:`MetricResult` (or a dict of named floats: the values alone)."""

    def protocol(self) -> dict[str, Any]:
        """Every setting this metric's numbers depend on (its parameters, its
        recipe), recorded in results.json's protocol under ``metrics.<name>``:
        results measured under other settings are never compared with these.
        Called without :meth:`setup`. Default: nothing beyond the name."""
        return {}

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        """Under ``torchrun``, after the host combined the declared states: combine
        the rest (state that is not a tensor, e.g. rows of text). ``all_gather_object(list,
        obj)`` fills ``list`` (``world_size`` long) with every process's picklable
        ``obj``; ``all_reduce_sum(tensor)`` sums a tensor in place. Default: sums any
        tensor in ``self.state`` that was not declared (a metric written before
        :meth:`add_state`)."""
        declared = self.declared_states()
        for key in sorted(getattr(self, "state", {}) or {}):
            if key not in declared and isinstance(self.state[key], Tensor):
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


def merge_shards(shards: Sequence[Metric]) -> Metric:
    """The first of ``shards`` (one metric per process, each updated with its
    share of the batches) holding what every process holds after the host's
    reduce: the test of a metric's reduction without starting processes. A
    metric that overrides :meth:`Metric.reduce` sees ``all_gather_object``
    give every shard's object."""
    first = shards[0]
    for name, how in first.declared_states().items():
        if how == "cat":
            first.state[name] = [torch.cat([s.cat_state(name) for s in shards])]
            continue
        values = torch.stack([s.state[name] for s in shards])
        first.state[name] = {"sum": values.sum(0), "max": values.amax(0), "min": values.amin(0)}[how]

    for key, value in list(first.state.items()):  # tensors not declared (a metric written before): summed
        if key not in first.declared_states() and isinstance(value, Tensor):
            first.state[key] = torch.stack([s.state[key] for s in shards]).sum(0)
    if type(first).reduce is Metric.reduce:
        return first
    handed = [[]] + [_handed(s) for s in shards[1:]]  # what every other shard gives its all_gather_object calls
    calls = itertools.count()

    def gather(parts: list, obj: Any) -> None:
        k = next(calls)
        parts[:] = [obj] + [h[k] for h in handed[1:]]

    first.reduce(lambda t: None, gather, len(shards))
    return first


def _handed(shard: Metric) -> list:
    """The objects ``shard`` hands to its ``all_gather_object`` calls, in order."""
    seen: list = []

    def gather(parts: list, obj: Any) -> None:
        seen.append(obj)
        parts[:] = [obj] + [None] * (len(parts) - 1)

    shard.reduce(lambda t: None, gather, 2)  # the shard is spent afterwards; only the first is kept
    return seen
