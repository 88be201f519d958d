"""Streaming benchmark metrics. Each sees every batch once.

All inputs are uint8 ``[B,3,H,W]``: originals (preprocessed) and
reconstructions quantized as a saved PNG would be. Every metric keeps its
state as tensors that add up across batches and processes (sums and counts,
float64), so a sharded run reduces with one ``all_reduce(SUM)`` per tensor
and gives the numbers a single process gives.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tokzoo.api import Codes, Metric, MetricResult, Tokenizer
from tokzoo.bench.probes import EncoderProbe, LinearProbe  # noqa: F401 (importable here)
from tokzoo.measures import psnr_per_image  # noqa: F401 (importable here)
from tokzoo.bench.fid import FID_DIMS, RFID, frechet_distance, load_inception, resampled_fid  # noqa: F401 (importable here)
from tokzoo.nn.quantizers import perplexity
from tokzoo.weights import KNOWN_FILES, find_weights, sha256


class MeanMetric(Metric):
    """Mean over images of a per-image score; subclasses give ``key`` and
    ``per_image``. State on the device: the float64 sum and count (summed across
    processes) and the per-image values (concatenated) for the bootstrap interval."""

    key = "score"

    def __init__(self):
        self.add_state("sum", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("n", torch.zeros((), dtype=torch.float64), "sum")
        self.add_state("values", torch.zeros(0, dtype=torch.float64), "cat")

    def per_image(self, originals: Tensor, reconstructions: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, originals, reconstructions, codes=None, batch=None):
        s = self.per_image(originals, reconstructions).double()
        self.state["sum"] += s.sum()
        self.state["n"] += len(s)
        self.state["values"].append(s)

    def compute(self) -> MetricResult:
        return MetricResult(values={self.key: float(self.state["sum"] / self.state["n"])},
                            per_image={self.key: self.cat_state("values")})


class PSNR(MeanMetric):
    """Mean over images of PSNR on uint8 data, ``data_range=255`` (skimage convention)."""

    name = key = "psnr"
    measures_continuous = True  # images only
    better = {"psnr": "higher"}

    def per_image(self, originals, reconstructions):
        return psnr_per_image(originals, reconstructions)


# -- SSIM ---------------------------------------------------------------------------
def _gauss_window(sigma: float = 1.5, truncate: float = 3.5, device=None) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim_per_image(a: Tensor, b: Tensor, data_range: float = 255.0) -> Tensor:
    """SSIM of uint8 images ``[B,C,H,W]``: Gaussian window (sigma 1.5, 11 taps),
    K1 = 0.01, K2 = 0.03, population covariance, mean over the valid region and
    channels; equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)``."""
    a, b = a.double(), b.double()
    C = a.shape[1]
    g = _gauss_window().tolist()
    k = len(g)
    if min(a.shape[-2:]) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels")
    # the five local means in one pass: the separable window as 11 shifted, weighted sums along each
    # axis (float64; about 3x a grouped float64 convolution on a CPU, equal to it within 1e-16)
    x = torch.cat([a, b, a * a, b * b, a * b], 1)
    for dim in (-1, -2):
        n = x.shape[dim] - k + 1
        y = x.narrow(dim, 0, n) * g[0]
        for i in range(1, k):
            y.add_(x.narrow(dim, i, n), alpha=g[i])
        x = y
    mu_a, mu_b, aa, bb, ab = x.split(C, 1)
    va, vb, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean(dim=(1, 2, 3))


class SSIM(MeanMetric):
    name = key = "ssim"
    measures_continuous = True
    better = {"ssim": "higher"}

    def per_image(self, originals, reconstructions):
        return ssim_per_image(originals, reconstructions)


# -- LPIPS --------------------------------------------------------------------------
class LPIPSMetric(MeanMetric):
    """Mean LPIPS (AlexNet by default, ``net=vgg`` optional) between uint8 originals and reconstructions."""

    name = key = "lpips"
    measures_continuous = True
    better = {"lpips": "lower"}

    def __init__(self, net: str = "alex"):
        if net not in ("alex", "vgg"):
            from tokzoo.errors import ConfigError

            raise ConfigError(f"lpips: net must be 'alex' or 'vgg', not '{net}' (metrics.lpips.net=vgg)")
        self.net_name = net
        self.key = "lpips" if net == "alex" else "lpips_vgg"
        self.better = {self.key: "lower"}
        super().__init__()

    def setup(self, context):
        from tokzoo.nn.perceptual import load_lpips

        super().setup(context)
        self.net = load_lpips(self.net_name, context.weights_dir).to(context.device)
        key = {"alex": "alexnet", "vgg": "vgg16"}[self.net_name]
        self.weights = {f"lpips-{self.net_name}": sha256(find_weights(KNOWN_FILES[key], "LPIPS", context.weights_dir))}

    @torch.no_grad()
    def per_image(self, originals, reconstructions):
        if min(originals.shape[-2:]) < 32:
            raise ValueError("LPIPS needs images of at least 32x32 pixels")
        return self.net(originals.float() / 255, reconstructions.float() / 255)


# -- rFID: tokzoo/bench/fid.py ---------------------------------------------------------


# -- codebook usage -----------------------------------------------------------------
class CodebookUsage(Metric):
    """Per level: fraction of codes used at least once, and perplexity (exp entropy),
    each with a normal bootstrap 95 % interval over the images (``stats.RESAMPLED``:
    1,000 resamples of the images with replacement, their codes counted again).

    For a hierarchical layout the child level is counted over the whole
    parent x child table (``K * m`` entries), since a child index alone means
    nothing without its parent."""

    name = "codebook"
    measures_continuous = False  # counts the discrete codes

    def __init__(self):
        self.better = {}

    def protocol(self):
        from tokzoo.bench.stats import RESAMPLED

        return {"interval": dict(RESAMPLED)}

    def reset(self, tokenizer: Tokenizer):
        self.vocab = dict(tokenizer.info.vocab)
        self.hierarchical = tokenizer.info.codes.layout == "hierarchical"
        if self.hierarchical:
            parent, child = list(self.vocab)
            self.vocab[child] = self.vocab[parent] * self.vocab[child]
        self.better, self.dtypes = {}, {}
        spec = tokenizer.info.codes
        for lvl in self.vocab:  # the codes of every image, on the device (memory by images, never by vocabulary)
            self.better[f"usage/{lvl}"] = "higher"  # per level: per scale of a multi-scale layout
            self.better[f"perplexity/{lvl}"] = "higher"
            small = torch.int32 if self.vocab[lvl] < 2 ** 31 else torch.int64
            self.add_state(f"codes/{lvl}", torch.zeros(0, spec.level_positions(lvl), dtype=small), "cat")
            self.dtypes[lvl] = small
        # the images' dataset indices: one order in one process or several
        self.add_state("index", torch.zeros(0, dtype=torch.long), "cat")
        self.seen = 0

    def update(self, originals, reconstructions, codes: Codes, batch=None):
        levels = dict(codes.levels)
        if self.hierarchical:
            parent, child = list(levels)
            levels[child] = levels[parent] * codes.vocab[child] + levels[child]
        for lvl, c in levels.items():
            self.state[f"codes/{lvl}"].append(c.reshape(len(c), -1).to(self.device, self.dtypes[lvl]))
        index = (batch or {}).get("index")
        n = codes.batch_size
        self.state["index"].append(index.to(self.device, torch.long) if isinstance(index, Tensor) and len(index) == n
                                   else torch.arange(self.seen, self.seen + n, device=self.device))
        self.seen += n

    def compute(self) -> MetricResult:
        values = {}
        for lvl in self.vocab:
            codes = self.cat_state(f"codes/{lvl}")
            if not len(codes):
                continue
            counts = torch.unique(codes.reshape(-1), return_counts=True)[1].double().cpu()
            values[f"usage/{lvl}"] = len(counts) / self.vocab[lvl]
            values[f"perplexity/{lvl}"] = perplexity(counts)
        return MetricResult(values=values, intervals=self._intervals(values))

    def _intervals(self, values: dict[str, float]) -> dict[str, tuple[float, float]]:
        import scipy.sparse

        from tokzoo.bench.stats import RESAMPLED, resample_counts, resample_interval

        index = self.cat_state("index").cpu()
        if not len(index):
            return {}
        order = np.argsort(index.numpy(), kind="stable")
        n = len(order)
        if n < 2:
            return {}
        tables = {}  # level -> per-image counts of the codes seen [n, distinct codes]
        for lvl in self.vocab:
            codes = self.cat_state(f"codes/{lvl}").cpu().numpy()[order]
            _, inv = np.unique(codes.reshape(-1), return_inverse=True)
            t = codes.shape[1]
            tables[lvl] = scipy.sparse.csc_matrix(
                (np.ones(n * t), (np.repeat(np.arange(n), t), inv.reshape(-1))), shape=(n, int(inv.max()) + 1)).T.tocsr()
        widest = max(t.shape[0] for t in tables.values())
        resampled: dict[str, list[np.ndarray]] = {k: [] for k in values}
        for draws in resample_counts(n, RESAMPLED["resamples"], RESAMPLED["seed"], chunk=max(1, min(64, 2 ** 22 // widest))):
            for lvl, table in tables.items():
                counts = np.asarray(table @ draws.T).T  # [b, distinct codes]: each resample's code counts
                p = counts / counts.sum(1, keepdims=True)
                entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1)
                resampled[f"usage/{lvl}"].append((counts > 0).sum(1) / self.vocab[lvl])
                resampled[f"perplexity/{lvl}"].append(np.exp(entropy))
        out = {}
        for key, parts in resampled.items():
            ci = resample_interval(values[key], np.concatenate(parts))
            if ci is not None:
                out[key] = ci
        return out


# -- linear probes ----------------------------------------------------------------------
class Throughput(Metric):
    """Encode and decode images/s after warm-up (the harness times each batch,
    synchronising the GPU), plus tokens and bits per image."""

    name = "throughput"
    better = {"encode_img_s": "higher", "decode_img_s": "higher"}
    measures_continuous = True  # timings; bits per image n/a on latents

    def __init__(self):
        for key in ("enc_s", "dec_s", "n"):
            self.add_state(key, torch.zeros((), dtype=torch.float64), "sum")

    def reset(self, tokenizer):
        self.info = tokenizer.info

    def update(self, originals, reconstructions, codes, batch=None):
        if batch.get("warmup"):
            return
        self.state["enc_s"] += batch["encode_s"]
        self.state["dec_s"] += batch["decode_s"]
        self.state["n"] += len(originals)

    def compute(self):
        # summed over processes: images/s of one process (processes run side by side)
        n = float(self.state["n"])
        out = {"tokens_per_image": float(self.info.tokens_per_image)}
        if self.info.bits_per_image is not None:  # None: continuous latents are no bit budget
            out["bits_per_image"] = self.info.bits_per_image
        if n > 0:
            out["encode_img_s"] = n / max(1e-12, float(self.state["enc_s"]))
            out["decode_img_s"] = n / max(1e-12, float(self.state["dec_s"]))
        na = ({"bits_per_image": "n/a: continuous tokenizer (float latents are not a bit budget)"}
              if getattr(self.info, "continuous", False) else {})
        return MetricResult(values=out, not_measured=na)
