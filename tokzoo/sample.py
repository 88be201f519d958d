"""The dataset side of the contract: what a sample holds (:class:`Sample`) and
what the host reads from a dataset (:class:`ImageDataset`). Importable from
:mod:`tokzoo.api`. A dataset need not subclass :class:`ImageDataset` (any
``torch.utils.data.Dataset`` of such samples works); subclassing gives the
defaults the host falls back on, in one place."""
from __future__ import annotations

import abc
from typing import Mapping, Sequence, TypedDict

import torch
from torch import Tensor

__all__ = ["Sample", "Word", "ImageDataset"]


class Word(TypedDict):
    """A word the ``text-ocr`` probe reads: its transcription and its box
    ``[x0, y0, x1, y1]`` in pixels of the returned image."""

    text: str
    box: list[float]


class Sample(TypedDict, total=False):
    """One item of a dataset. Either an image (``image``, ``label``, ``caption``,
    ``index`` required; ``attributes`` and ``words`` optional) or
    ``{"skipped": "why"}`` for an item that cannot be read (counted and
    reported, never a crash).

    - ``image``: float ``[3, R, R]`` in ``[0, 1]`` at the resolution asked for;
    - ``label``: the class (an int; ``-1`` for an image without one);
    - ``caption``: text about the image (``""`` when there is none);
    - ``index``: the item's position in the dataset (orders the images the
      same way in one process or several);
    - ``attributes``: ``{name: value}``, what the image shows: the
      ``vqa-probe`` asks one question per name (names of lower-case letters,
      digits and ``_``; values any text);
    - ``words``: the :class:`Word` s the ``text-ocr`` probe reads.
    """

    image: Tensor
    label: int
    caption: str
    index: int
    attributes: dict[str, str]
    words: list[Word]
    skipped: str


class ImageDataset(torch.utils.data.Dataset, abc.ABC):
    """A dataset of :class:`Sample` s, and every attribute the host reads from one.

    The factory registered with ``tokzoo_register_datasets`` is called as
    ``factory(split=..., resolution=..., **params)``; it returns one of these
    (or any ``Dataset`` with the same attributes)."""

    #: how many classes the labels count (the probes size their classifiers by
    #: it); None: the largest label + 1
    num_classes: int | None = None
    #: the class names, in label order (training logs and reports name classes by them)
    classes: Sequence[str] | None = None
    #: ``{name: [values]}`` of the ``attributes`` samples carry, when known: the
    #: order the ``vqa-probe`` asks and shows its questions in
    attributes: Mapping[str, Sequence[str]] | None = None
    #: True when every split holds the same images (no held-out split): the
    #: probes then train on the images after the measured ones
    same_for_every_split: bool = False

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many items (skipped ones included)."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> Sample:
        """Item ``index``: a :class:`Sample`."""

    def fingerprint(self) -> str | None:
        """What names these images: it must change whenever the images or their
        labels do (results, the rFID cache and the AR probe's judge are reused
        while it is the same). None: the host hashes the dataset's parameters
        and length (right for data made deterministically from its parameters)."""
        return None
