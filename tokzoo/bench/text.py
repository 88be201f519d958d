"""``text-ocr``: does the tokenizer keep the text? A real, pretrained recogniser
reads every word on its ground-truth box, in the original and in the
reconstruction (TokBench's protocol): T-ACC (the word read exactly, after
lower-casing and keeping letters and digits) and T-NED (1 - the normalised edit
distance), overall and by word size relative to the image (TokBench's buckets:
small [0.02, 0.03), medium [0.03, 0.04), large >= 0.04 of the image height),
each with a 95 % bootstrap interval over the images. The same numbers on the
originals are the ceiling (``..._ceiling``): what the recogniser reads when
nothing is lost. Opt-in, as the other probes (it reads every word twice).

Engines (``metrics.text-ocr.engine=``): ``ppocr`` (default), PP-OCRv4's
recogniser from the ``rapidocr-onnxruntime`` wheel (``pip install
'tokzoo[ocr]'``), run by onnxruntime (its CUDA provider when installed), the
model file identified by SHA-256 in the protocol; ``tesseract``, Debian's
``tesseract-ocr`` (LSTM, English), one line per crop. Measured against each other
on the text data's originals (benchmarks/ocr_engines.py): the default is the
stronger one there.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tokzoo.api import Metric, MetricResult
from tokzoo.data.text import BUCKETS, bucket_of
from tokzoo.errors import ConfigError
from tokzoo.measures import resample_counts, resample_interval

VERSION = 1
PAD = 0.15  # each side of a word box, as a fraction of its height: the crop the recogniser reads
NAMES = tuple(BUCKETS)  # small, medium, large
# per image and bucket: words, exact (reconstruction), NED (reconstruction), exact (original), NED (original)
WORDS, ACC, NED, ACC0, NED0 = range(5)


def normalise(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (words are short: the plain dynamic programme)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def ned_score(read: str, truth: str) -> float:
    a, b = normalise(read), normalise(truth)
    return 1.0 - edit_distance(a, b) / max(len(a), len(b), 1)


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PPOCR:
    """PP-OCRv4's text recogniser (rapidocr-onnxruntime's packaged model), crops in, text out."""

    name = "ppocr"
    title = "PP-OCRv4 recogniser (rapidocr-onnxruntime, onnxruntime)"

    def __init__(self):
        try:
            import rapidocr_onnxruntime
            import yaml
            from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
        except ImportError as exc:  # not installed, or a library it loads is missing (OpenCV's libGL)
            raise ConfigError(f"text-ocr needs the rapidocr-onnxruntime package (PP-OCRv4): pip install "
                              f"'tokzoo[ocr]' (importing it failed: {exc})") from None
        root = Path(rapidocr_onnxruntime.__file__).parent
        config = yaml.safe_load((root / "config.yaml").read_text())["Rec"]
        config["model_path"] = str(root / config["model_path"])
        import onnxruntime

        config["use_cuda"] = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        config["rec_batch_num"] = 32
        self.model = config["model_path"]
        self.weights = {f"rapidocr-onnxruntime/{Path(self.model).name}": _sha256(self.model)}
        self.recognise = TextRecognizer(config)

    def read(self, crops: list[np.ndarray]) -> list[str]:
        if not crops:
            return []
        out, _ = self.recognise([np.ascontiguousarray(c[:, :, ::-1]) for c in crops])  # RGB -> BGR, as cv2 reads
        return [str(text) for text, _score in out]


class Tesseract:
    """Debian's tesseract-ocr (LSTM engine, English), one text line per crop."""

    name = "tesseract"
    title = "Tesseract LSTM (eng), one line per crop"

    def __init__(self):
        self.binary = shutil.which("tesseract")
        if not self.binary:
            raise ConfigError("text-ocr engine=tesseract needs the tesseract command: apt install tesseract-ocr "
                              "tesseract-ocr-eng")
        listed = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True).stdout
        folder = re.search(r'"(.+?)"', listed)
        model = Path(folder.group(1) if folder else "/usr/share/tesseract-ocr/5/tessdata") / "eng.traineddata"
        if not model.is_file():
            raise ConfigError(f"text-ocr engine=tesseract: no English model at {model}: apt install tesseract-ocr-eng")
        self.weights = {f"tesseract/{model.name}": _sha256(model)}

    def read(self, crops: list[np.ndarray]) -> list[str]:
        from PIL import Image

        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for k, crop in enumerate(crops):
                path = os.path.join(tmp, f"{k}.png")
                Image.fromarray(crop).save(path)
                res = subprocess.run([self.binary, path, "stdout", "--psm", "7", "-l", "eng"], capture_output=True,
                                     text=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})
                out.append(res.stdout.strip())
        return out


ENGINES = {"ppocr": PPOCR, "tesseract": Tesseract}


def crop(image: Tensor, box: list[float]) -> np.ndarray:
    """The word's box (padded by PAD of its height) of a uint8 ``[3, H, W]`` image, as ``[h, w, 3]``."""
    _, H, W = image.shape
    x0, y0, x1, y1 = box
    pad = max(1, round(PAD * (y1 - y0)))
    x0, y0 = max(0, int(x0) - pad), max(0, int(y0) - pad)
    x1, y1 = min(W, int(np.ceil(x1)) + pad), min(H, int(np.ceil(y1)) + pad)
    return image[:, y0:y1, x0:x1].permute(1, 2, 0).cpu().numpy()


class TextOCR(Metric):
    """T-ACC / T-NED of the words on the reconstructions, by size bucket, beside the ceiling."""

    name = "text-ocr"
    measures_continuous = True  # it reads only the images

    def __init__(self, engine: str = "ppocr", resamples: int = 1000, crops_shown: int = 6):
        """engine: ppocr (PP-OCRv4, default) or tesseract; resamples: bootstrap resamples of the
        images for each interval; crops_shown: word crops per tokenizer in the report's picture."""
        if engine not in ENGINES:
            raise ConfigError(f"text-ocr: engine must be one of {', '.join(ENGINES)}, not {engine!r:.40}")
        if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 2:
            raise ConfigError(f"text-ocr: resamples must be a whole number >= 2, not {resamples!r:.40}")
        self.engine_name, self.resamples, self.crops_shown = engine, resamples, crops_shown
        self.better = {k: "higher" for k in self._keys(ceiling=False)}

    @staticmethod
    def _keys(ceiling: bool) -> list[str]:
        end = "_ceiling" if ceiling else ""
        keys = [f"text_acc{end}", f"text_ned{end}"]
        return keys + [f"text_{m}_{b}{end}" for b in NAMES for m in ("acc", "ned")]

    def setup(self, context) -> None:
        super().setup(context)
        self.engine = ENGINES[self.engine_name]()
        self.weights = dict(self.engine.weights)

    def protocol(self) -> dict[str, Any]:
        return {"version": VERSION, "engine": ENGINES[self.engine_name].title, "buckets": {k: list(v) for k, v in
                                                                                          BUCKETS.items()},
                "normalise": "lower-case, letters and digits only", "crop_pad": PAD, "resamples": self.resamples}

    def reset(self, tokenizer) -> None:
        self.rows: list[np.ndarray] = []  # per image [3 buckets, 5]
        self.shown: list[tuple[np.ndarray, np.ndarray]] = []
        self.result: dict[str, float] = {}

    def update(self, originals, reconstructions, codes=None, batch=None) -> None:
        words = (batch or {}).get("words")
        if words is None:
            raise ValueError("text-ocr needs images with word boxes: --data text, or textfolder:PATH (words.json)")
        size = originals.shape[-2]
        crops_o, crops_r, where = [], [], []
        for i, image_words in enumerate(words):
            for w in image_words:
                crops_o.append(crop(originals[i], w["box"]))
                crops_r.append(crop(reconstructions[i], w["box"]))
                where.append((i, NAMES.index(bucket_of(w["box"][3] - w["box"][1], size)), w["text"]))
        read_o, read_r = self.engine.read(crops_o), self.engine.read(crops_r)
        rows = np.zeros((len(words), len(NAMES), 5))
        for (i, b, truth), o, r in zip(where, read_o, read_r):
            rows[i, b] += [1, normalise(r) == normalise(truth), ned_score(r, truth), normalise(o) == normalise(truth),
                           ned_score(o, truth)]
        self.rows.extend(rows)
        for k, (i, b, _) in enumerate(where):  # a few words of each bucket, original beside reconstruction
            if sum(1 for s in self.shown if s[2] == b) < max(1, self.crops_shown // len(NAMES)):
                self.shown.append((crops_o[k], crops_r[k], b))

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        parts = [None] * world_size
        all_gather_object(parts, (self.rows, self.shown))
        self.rows = [r for p in parts if p for r in p[0]]
        self.shown = [s for p in parts if p for s in p[1]][: self.crops_shown]

    @staticmethod
    def _values(table: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        t = table if weights is None else table * weights[:, None, None]
        sums = t.sum(0)  # [3 buckets, 5]
        out = {}
        for end, acc, ned in (("", ACC, NED), ("_ceiling", ACC0, NED0)):
            total = sums[:, WORDS].sum()
            if total > 0:
                out[f"text_acc{end}"] = sums[:, acc].sum() / total
                out[f"text_ned{end}"] = sums[:, ned].sum() / total
            for b, name in enumerate(NAMES):
                if sums[b, WORDS] > 0:
                    out[f"text_acc_{name}{end}"] = sums[b, acc] / sums[b, WORDS]
                    out[f"text_ned_{name}{end}"] = sums[b, ned] / sums[b, WORDS]
        return out

    def _measure(self) -> dict[str, float]:
        if not self.rows:
            raise ValueError("text-ocr: no image with a word was measured")
        self.table = np.stack(self.rows)
        self.result = {k: float(v) for k, v in self._values(self.table).items()}
        if "text_acc" not in self.result:
            raise ValueError("text-ocr: the measured images hold no word boxes")
        return dict(self.result)

    def _intervals(self) -> dict[str, tuple[float, float]]:
        draws: dict[str, list[float]] = {k: [] for k in self.result}
        for counts in resample_counts(len(self.table), self.resamples, seed=0):
            for w in counts:
                for k, v in self._values(self.table, w).items():
                    if k in draws:
                        draws[k].append(v)
        out = {}
        for k, v in self.result.items():
            ci = resample_interval(v, draws[k])
            if ci is not None:
                out[k] = (max(0.0, ci[0]), min(1.0, ci[1]))
        return out

    def _not_measured(self) -> dict[str, str]:
        missing = [b for b in NAMES if f"text_acc_{b}" not in self.result]
        return {f"text_acc_{b}": f"no word in the {b} bucket at this resolution (a word under 6 px is drawn large)"
                for b in missing}

    def _images(self) -> dict[str, Tensor]:
        """``text_words``: word crops, each original above its reconstruction, by bucket."""
        if not self.shown:
            return {}
        from PIL import Image

        tiles = []
        for o, r, _ in self.shown:
            pair = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((96, 24), Image.BICUBIC))
                    for c in (o, r)]
            tiles.append(torch.from_numpy(np.concatenate(pair, 0)).permute(2, 0, 1))
        return {"text_words": torch.stack(tiles)}

    def compute(self) -> MetricResult:
        values = self._measure()
        return MetricResult(values=values, intervals=self._intervals(), not_measured=self._not_measured(),
                            images=self._images())
