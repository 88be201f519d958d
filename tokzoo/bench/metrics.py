"""Streaming benchmark metrics. Each sees every batch once.

All inputs are uint8 ``[B,3,H,W]``: originals (preprocessed) and
reconstructions quantized as a saved PNG would be. Every metric keeps its
state as tensors that add up across batches and processes (sums and counts,
float64), so a sharded run reduces with one ``all_reduce(SUM)`` per tensor
and gives the numbers a single process gives.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tokzoo.api import Codes, Metric, Tokenizer
from tokzoo.bench.probes import EncoderProbe, LinearProbe  # noqa: F401 (importable here)
from tokzoo.measures import psnr_per_image  # noqa: F401 (importable here)
from tokzoo.nn.quantizers import perplexity
from tokzoo.errors import WeightsNotFoundError
from tokzoo.weights import KNOWN_FILES, find_weights, sha256


class SumMetric(Metric):
    """A metric whose state is a dict of float64 tensors that add up (the
    default :meth:`Metric.reduce` sums them across processes)."""

    state: dict[str, Tensor]


# -- PSNR ---------------------------------------------------------------------------
class MeanMetric(SumMetric):
    """Mean over images of a per-image score; subclasses give ``key`` and ``per_image``."""

    key = "score"

    def __init__(self):
        self.state = {}

    def reset(self, tokenizer=None):
        self.state = {"sum": torch.zeros((), dtype=torch.float64), "n": torch.zeros((), dtype=torch.float64)}
        self.values: list[Tensor] = []

    def per_image(self, originals: Tensor, reconstructions: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, originals, reconstructions, codes=None, batch=None):
        s = self.per_image(originals, reconstructions).double().cpu()
        self.state["sum"] += s.sum()
        self.state["n"] += len(s)
        self.values.append(s)

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        super().reduce(all_reduce_sum, all_gather_object, world_size)
        parts = [None] * world_size
        all_gather_object(parts, torch.cat(self.values) if self.values else torch.zeros(0, dtype=torch.float64))
        self.values = [p for p in parts if p is not None]

    def compute(self):
        return {self.key: float(self.state["sum"] / self.state["n"])}

    def per_image_values(self) -> dict[str, Tensor]:
        return {self.key: torch.cat(self.values)} if self.values else {}


class PSNR(MeanMetric):
    """Mean over images of PSNR on uint8 data, ``data_range=255`` (skimage convention)."""

    name = key = "psnr"
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
    g = _gauss_window(device=a.device)
    k = len(g)
    if min(a.shape[-2:]) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels")
    wx = g.view(1, 1, 1, k).repeat(C, 1, 1, 1)
    wy = g.view(1, 1, k, 1).repeat(C, 1, 1, 1)

    def filt(x):
        return F.conv2d(F.conv2d(x, wx, groups=C), wy, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    va = filt(a * a) - mu_a ** 2
    vb = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.mean(dim=(1, 2, 3))


class SSIM(MeanMetric):
    name = key = "ssim"
    better = {"ssim": "higher"}

    def per_image(self, originals, reconstructions):
        return ssim_per_image(originals, reconstructions)


# -- LPIPS --------------------------------------------------------------------------
class LPIPSMetric(MeanMetric):
    """Mean LPIPS (AlexNet by default, ``net=vgg`` optional) between uint8 originals and reconstructions."""

    name = key = "lpips"
    better = {"lpips": "lower"}

    def __init__(self, net: str = "alex"):
        if net not in ("alex", "vgg"):
            from tokzoo.errors import ConfigError

            raise ConfigError(f"lpips: net must be 'alex' or 'vgg', not '{net}' (metrics.lpips.net=vgg)")
        self.net_name = net
        self.key = "lpips" if net == "alex" else "lpips_vgg"
        self.better = {self.key: "lower"}
        self.state = {}

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


# -- rFID ---------------------------------------------------------------------------
def load_inception(weights_dir=None, device="cpu", purpose: str = "rFID"):
    """torch-fidelity's InceptionV3 (FID 2015-12-05 weights, TF-compatible resize),
    from the local file ``weights-inception-2015-12-05-6726825d.pth``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = find_weights(KNOWN_FILES["inception"], f"{purpose} (InceptionV3)", weights_dir)
    try:  # refuse anything that is not a plain tensor state dict before torch-fidelity unpickles it
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(f"{path} is not an InceptionV3 state dict ({str(exc).splitlines()[0]})") from None
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    return model.eval().to(device), sha256(path)


#: InceptionV3 pool3 feature dimensions: on fewer images the covariance is singular
FID_DIMS = 2048


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), in float64 (scipy's sqrtm)."""
    import scipy.linalg

    import warnings

    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product (fewer images than dimensions) is flagged in the results
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def trace_sqrt_product(a: Tensor, b: Tensor) -> float:
    """``Tr sqrt(S_a S_b)`` for the covariances ``S = X^T X`` of two factors
    ``a`` ``[n_a, d]`` and ``b`` ``[n_b, d]`` (centred, weighted, scaled rows;
    float64, on any device): the nuclear norm of ``a b^T`` when there are fewer
    rows than dimensions, else the square roots of the eigenvalues of
    ``R^T S_b R`` with ``S_a = R R^T`` (both symmetric: no complex square root).
    The bootstrap's fast path to :func:`frechet_distance`'s trace term (equal to float noise)."""
    if max(len(a), len(b)) < a.shape[1]:
        m = a @ b.T
        return float(torch.linalg.eigvalsh(m @ m.T).clamp(min=0).sqrt().sum())
    lam, u = torch.linalg.eigh(a.T @ a)
    r = u * lam.clamp(min=0).sqrt()
    bb = b @ r
    return float(torch.linalg.eigvalsh(bb.T @ bb).clamp(min=0).sqrt().sum())


def _weighted_factor(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, factor ``A`` with ``A^T A`` the covariance) of rows ``x`` drawn ``w`` times."""
    n = w.sum()
    mu = w @ x / n
    return mu, (x - mu) * (w / (n - 1)).sqrt()[:, None]


def resampled_fid(x: Tensor, y: Tensor, w: Tensor) -> float:
    """The Fréchet distance of rows ``x`` and ``y`` (paired), each row drawn ``w`` times."""
    mx, a = _weighted_factor(x, w)
    my, b = _weighted_factor(y, w)
    diff = mx - my
    return float(diff @ diff + (a * a).sum() + (b * b).sum()) - 2 * trace_sqrt_product(a, b)


class RFID(SumMetric):
    """Reconstruction FID against the preprocessed originals of the same images.

    Streaming float64 sums (``sum x``, ``sum x x^T``, count) for both sets; the
    reference sums can be cached by dataset fingerprint and protocol. The
    interval: a normal bootstrap over the images, ``resamples`` draws of the
    images with replacement (the same draws for originals and reconstructions,
    paired by dataset index), the Fréchet distance recomputed on each from the
    images' float32 features (kept, and cached with the reference sums);
    ``resamples=0`` measures without it. Approximate below 2,048 images, as rFID itself."""

    name = "rfid"
    better = {"rfid": "lower"}

    def __init__(self, resamples: int = 100):
        if not isinstance(resamples, int) or isinstance(resamples, bool) or not 0 <= resamples <= 10000:
            raise ValueError(f"metrics.rfid.resamples={resamples!r}: a whole number from 0 to 10000")
        self.resamples = resamples
        self.state = {}
        self.reference: dict[str, Tensor] | None = None  # cached reference sums, when given

    def protocol(self):
        return {"interval": {"method": "normal", "confidence": 0.95, "resamples": self.resamples, "seed": 0,
                             "over": "images measured, paired originals / reconstructions, resampled with replacement"}}

    def setup(self, context):
        super().setup(context)
        self.model, sha = load_inception(context.weights_dir, context.device)
        self.weights = {"inception-2015-12-05": sha}
        self.device = context.device

    def reference_identity(self):
        return json.dumps(["rfid", self.weights, "with-features"])

    def load_reference(self, state):
        self.reference = state

    def reset(self, tokenizer=None):
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        self.state = {"fake_sum": z(2048), "fake_outer": z(2048, 2048), "fake_n": z(()),
                      "real_sum": z(2048), "real_outer": z(2048, 2048), "real_n": z(())}
        self.reference = None
        self.kept: dict[str, list[Tensor]] = {"fake": [], "real": [], "index": []}  # per image, for the interval
        self.seen = 0

    @torch.no_grad()
    def features(self, images_u8: Tensor) -> Tensor:
        return self.model(images_u8.to(self.device))[0].double().cpu()

    def update(self, originals, reconstructions, codes=None, batch=None):
        f = self.features(reconstructions)
        self.state["fake_sum"] += f.sum(0)
        self.state["fake_outer"] += f.t() @ f
        self.state["fake_n"] += len(f)
        index = (batch or {}).get("index")
        if self.resamples:
            self.kept["fake"].append(f.float())
            self.kept["index"].append(index.cpu().long() if isinstance(index, Tensor) and len(index) == len(f)
                                      else torch.arange(self.seen, self.seen + len(f)))
        self.seen += len(f)
        if self.reference is None:
            r = self.features(originals)
            self.state["real_sum"] += r.sum(0)
            self.state["real_outer"] += r.t() @ r
            self.state["real_n"] += len(r)
            if self.resamples:
                self.kept["real"].append(r.float())

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        super().reduce(all_reduce_sum, all_gather_object, world_size)
        mine = {k: torch.cat(v) for k, v in self.kept.items() if v}
        parts = [None] * world_size
        all_gather_object(parts, mine)
        self.kept = {k: [p[k] for p in parts if p and k in p] for k in ("fake", "real", "index")}

    @staticmethod
    def stats(s: Tensor, outer: Tensor, n: Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = float(n)
        mu = (s / n).numpy()
        cov = ((outer - n * torch.outer(s / n, s / n)) / (n - 1)).numpy()
        return mu, cov

    def _sorted(self) -> tuple[Tensor, Tensor | None, Tensor] | None:
        """(indices, originals' features or None, reconstructions' features), in dataset order."""
        if not self.kept["fake"]:
            return None
        index = torch.cat(self.kept["index"])
        order = torch.argsort(index, stable=True)
        real = torch.cat(self.kept["real"])[order] if self.kept["real"] else None
        return index[order], real, torch.cat(self.kept["fake"])[order]

    def reference_state(self) -> dict[str, Tensor]:
        out = {k: self.state[k] for k in ("real_sum", "real_outer", "real_n")}
        kept = self._sorted()
        if kept is not None and kept[1] is not None:
            out["real_index"], out["real_features"] = kept[0], kept[1]
        return out

    def compute(self):
        ref = self.reference or self.reference_state()
        if float(self.state["fake_n"]) < 2:
            raise ValueError("rFID needs at least 2 images")
        mu1, s1 = self.stats(ref["real_sum"], ref["real_outer"], ref["real_n"])
        mu2, s2 = self.stats(self.state["fake_sum"], self.state["fake_outer"], self.state["fake_n"])
        self._value = frechet_distance(mu1, s1, mu2, s2)
        return {"rfid": self._value}

    def intervals(self):
        from tokzoo.bench.stats import resample_counts, resample_interval

        kept = self._sorted() if self.resamples else None
        if kept is None:
            return {}
        index, real, fake = kept
        if self.reference is not None:  # the originals' features from the cache, for these very images
            if not torch.equal(self.reference.get("real_index", torch.zeros(0)), index):
                return {}
            real = self.reference["real_features"]
        if real is None or len(index) < 2:
            return {}
        device = getattr(self, "device", "cpu")
        x, y = real.to(device, torch.float64), fake.to(device, torch.float64)
        resampled = [resampled_fid(x, y, torch.from_numpy(w).to(device))
                     for draws in resample_counts(len(x), self.resamples, seed=0, chunk=8) for w in draws]
        ci = resample_interval(self._value, resampled)
        return {"rfid": ci} if ci is not None else {}

    def flags(self) -> dict[str, str]:
        n = int(float(self.state["fake_n"]))
        if n < FID_DIMS:
            return {"rfid": f"rank-deficient: N = {n} < {FID_DIMS} images, fewer than the Inception feature "
                            "dimensions (singular covariance; compare only at equal N; its interval approximate)"}
        return {}


# -- codebook usage -----------------------------------------------------------------
class CodebookUsage(SumMetric):
    """Per level: fraction of codes used at least once, and perplexity (exp entropy),
    each with a normal bootstrap 95 % interval over the images (``stats.RESAMPLED``:
    1,000 resamples of the images with replacement, their codes counted again).

    For a hierarchical layout the child level is counted over the whole
    parent x child table (``K * m`` entries), since a child index alone means
    nothing without its parent."""

    name = "codebook"

    def __init__(self):
        self.state, self.better = {}, {}

    def protocol(self):
        from tokzoo.bench.stats import RESAMPLED

        return {"interval": dict(RESAMPLED)}

    def reset(self, tokenizer: Tokenizer):
        self.vocab = dict(tokenizer.info.vocab)
        self.hierarchical = tokenizer.info.codes.layout == "hierarchical"
        if self.hierarchical:
            parent, child = list(self.vocab)
            self.vocab[child] = self.vocab[parent] * self.vocab[child]
        self.state = {lvl: torch.zeros(n, dtype=torch.float64) for lvl, n in self.vocab.items()}
        self.better = {}
        for lvl in self.vocab:
            self.better[f"usage/{lvl}"] = "higher"
            self.better[f"perplexity/{lvl}"] = "higher"
        self.codes: dict[str, list[Tensor]] = {lvl: [] for lvl in self.vocab}  # per image, for the bootstrap
        self.index: list[Tensor] = []  # the images' dataset indices: one order in one process or several
        self.seen = 0

    def update(self, originals, reconstructions, codes: Codes, batch=None):
        levels = dict(codes.levels)
        if self.hierarchical:
            parent, child = list(levels)
            levels[child] = levels[parent] * codes.vocab[child] + levels[child]
        for lvl, c in levels.items():
            self.state[lvl] += torch.bincount(c.reshape(-1).cpu(), minlength=self.vocab[lvl]).double()
            small = torch.int32 if self.vocab[lvl] < 2 ** 31 else torch.int64
            self.codes[lvl].append(c.reshape(len(c), -1).cpu().to(small))
        index = (batch or {}).get("index")
        n = len(originals)
        self.index.append(index.cpu().long() if isinstance(index, Tensor) and len(index) == n
                          else torch.arange(self.seen, self.seen + n))
        self.seen += n

    def reduce(self, all_reduce_sum, all_gather_object, world_size: int) -> None:
        super().reduce(all_reduce_sum, all_gather_object, world_size)
        mine = ({lvl: torch.cat(v) for lvl, v in self.codes.items() if v},
                torch.cat(self.index) if self.index else torch.zeros(0, dtype=torch.long))
        parts = [None] * world_size
        all_gather_object(parts, mine)
        parts = [p for p in parts if p is not None and len(p[1])]
        self.codes = {lvl: [p[0][lvl] for p in parts] for lvl in self.vocab}
        self.index = [p[1] for p in parts]

    def compute(self):
        out = {}
        for lvl, counts in self.state.items():
            out[f"usage/{lvl}"] = float((counts > 0).double().mean())
            out[f"perplexity/{lvl}"] = perplexity(counts)
        self._values = out
        return out

    def intervals(self):
        import scipy.sparse

        from tokzoo.bench.stats import RESAMPLED, resample_counts, resample_interval

        if not self.index:
            return {}
        order = np.argsort(torch.cat(self.index).numpy(), kind="stable")
        n = len(order)
        if n < 2:
            return {}
        tables = {}  # level -> per-image counts of the codes seen [n, distinct codes]
        for lvl, parts in self.codes.items():
            codes = torch.cat(parts).numpy()[order]
            _, inv = np.unique(codes.reshape(-1), return_inverse=True)
            t = codes.shape[1]
            tables[lvl] = scipy.sparse.csc_matrix(
                (np.ones(n * t), (np.repeat(np.arange(n), t), inv.reshape(-1))), shape=(n, int(inv.max()) + 1)).T.tocsr()
        widest = max(t.shape[0] for t in tables.values())
        resampled: dict[str, list[np.ndarray]] = {k: [] for k in self._values}
        for draws in resample_counts(n, RESAMPLED["resamples"], RESAMPLED["seed"], chunk=max(1, min(64, 2 ** 22 // widest))):
            for lvl, table in tables.items():
                counts = np.asarray(table @ draws.T).T  # [b, distinct codes]: each resample's code counts
                p = counts / counts.sum(1, keepdims=True)
                entropy = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1)
                resampled[f"usage/{lvl}"].append((counts > 0).sum(1) / self.vocab[lvl])
                resampled[f"perplexity/{lvl}"].append(np.exp(entropy))
        out = {}
        for key, parts in resampled.items():
            ci = resample_interval(self._values[key], np.concatenate(parts))
            if ci is not None:
                out[key] = ci
        return out


# -- linear probes ----------------------------------------------------------------------
class Throughput(SumMetric):
    """Encode and decode images/s after warm-up (the harness times each batch,
    synchronising the GPU), plus tokens and bits per image."""

    name = "throughput"
    better = {"encode_img_s": "higher", "decode_img_s": "higher"}

    def __init__(self):
        self.state = {}

    def reset(self, tokenizer):
        self.info = tokenizer.info
        z = lambda: torch.zeros((), dtype=torch.float64)  # noqa: E731
        self.state = {"enc_s": z(), "dec_s": z(), "n": z()}

    def update(self, originals, reconstructions, codes, batch=None):
        if batch.get("warmup"):
            return
        self.state["enc_s"] += batch["encode_s"]
        self.state["dec_s"] += batch["decode_s"]
        self.state["n"] += len(originals)

    def compute(self):
        # summed over processes: images/s of one process (processes run side by side)
        n = float(self.state["n"])
        out = {"tokens_per_image": float(self.info.tokens_per_image), "bits_per_image": self.info.bits_per_image}
        if n > 0:
            out["encode_img_s"] = n / max(1e-12, float(self.state["enc_s"]))
            out["decode_img_s"] = n / max(1e-12, float(self.state["dec_s"]))
        return out


#: registered by core: name -> (class, description); parameters: the class's signature
CORE_METRICS = {
    "psnr": (PSNR, "PSNR on uint8 reconstructions, data_range 255"),
    "ssim": (SSIM, "SSIM (Gaussian 11x11, sigma 1.5) on uint8, data_range 255"),
    "lpips": (LPIPSMetric, "LPIPS (AlexNet; metrics.lpips.net=vgg), weights from a local file"),
    "rfid": (RFID, "reconstruction FID, InceptionV3 2015-12-05 weights, TF-compatible resize, float64"),
    "codebook": (CodebookUsage, "codebook usage and perplexity per level"),
    "probe": (LinearProbe, "linear-probe top-1 on features from the tokens alone (token_features)"),
    "probe-encoder": (EncoderProbe, "linear-probe top-1 on continuous pre-quantization features"),
    "throughput": (Throughput, "encode / decode images per second after warm-up; tokens and bits per image"),
}
