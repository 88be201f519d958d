"""rFID: torch-fidelity's InceptionV3 features of originals and reconstructions,
float64 streaming statistics, the Fréchet distance, and its image bootstrap
(paired features resampled; a fast exact trace for each resample)."""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import Tensor

from tokzoo.api import Metric, MetricResult
from tokzoo.errors import WeightsNotFoundError
from tokzoo.weights import KNOWN_FILES, find_weights, sha256


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
    # channels-last convolutions: 1.5x faster on a CPU here, the features equal within 2e-6 relative (float32
    # summation order); the metric that dominates a bench's time
    return model.eval().to(device).to(memory_format=torch.channels_last), sha256(path)


#: the InceptionV3 every Fréchet distance here uses: the key under which a bench's metrics share it
INCEPTION = "inception-2015-12-05"
#: what its pool3 features of a batch are shared under (rfid and the AR probe's gFID, on the originals)
INCEPTION_FEATURES = INCEPTION + "/pool3/float64"
#: InceptionV3 pool3 feature dimensions: on fewer images the covariance is singular
FID_DIMS = 2048


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), in float64 on the device of the
    statistics (tensors; numpy arrays: the CPU). The trace of the square root from
    symmetric eigenvalues: with ``S1 = R R^T`` (``R = U sqrt(L)``), ``Tr sqrt(S1 S2)``
    is the sum of the square roots of the eigenvalues of ``R^T S2 R``, which is
    symmetric positive semi-definite: no complex square root, no ``sqrtm``; a
    singular product (fewer images than dimensions) needs no offset. Equal to
    scipy's ``sqrtm`` and to torch-fidelity to float noise (tests)."""
    t = [x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x)) for x in (mu1, s1, mu2, s2)]
    device = next((x.device for x in t if x.device.type != "cpu"), torch.device("cpu"))
    mu1, s1, mu2, s2 = (x.to(device, torch.float64) for x in t)
    lam, u = torch.linalg.eigh((s1 + s1.T) / 2)
    r = u * lam.clamp(min=0).sqrt()
    middle = r.T @ s2 @ r
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt)


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


class RFID(Metric):
    """Reconstruction FID against the preprocessed originals of the same images.

    Streaming float64 sums (``sum x``, ``sum x x^T``, count) for both sets; the
    reference sums can be cached by dataset fingerprint and protocol. The
    interval: a normal bootstrap over the images, ``resamples`` draws of the
    images with replacement (the same draws for originals and reconstructions,
    paired by dataset index), the Fréchet distance recomputed on each from the
    images' float32 features (kept, and cached with the reference sums);
    ``resamples=0`` measures without it. With the features kept, the value itself
    is computed from them: ``Tr sqrt(S1 S2)`` from symmetric eigenvalues
    (:func:`trace_sqrt_product`) instead of scipy's ``sqrtm`` (5x faster at
    2,048 dimensions; equal to it, and to torch-fidelity, to float noise).
    Approximate below 2,048 images, as rFID itself."""

    name = "rfid"
    measures_continuous = True  # images only
    better = {"rfid": "lower"}

    def __init__(self, resamples: int = 100):
        if not isinstance(resamples, int) or isinstance(resamples, bool) or not 0 <= resamples <= 10000:
            raise ValueError(f"metrics.rfid.resamples={resamples!r}: a whole number from 0 to 10000")
        self.resamples = resamples
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        for side in ("fake", "real"):  # float64 sums on the device, and the per-image features for the interval
            self.add_state(f"{side}_sum", z(FID_DIMS), "sum")
            self.add_state(f"{side}_outer", z(FID_DIMS, FID_DIMS), "sum")
            self.add_state(f"{side}_n", z(()), "sum")
            self.add_state(f"kept_{side}", torch.zeros(0, FID_DIMS), "cat")
        self.add_state("kept_index", torch.zeros(0, dtype=torch.long), "cat")
        self.reference: dict[str, Tensor] | None = None  # cached reference sums, when given

    def protocol(self):
        return {"interval": {"method": "normal", "confidence": 0.95, "resamples": self.resamples, "seed": 0,
                             "over": "images measured, paired originals / reconstructions, resampled with replacement"}}

    def setup(self, context):
        super().setup(context)
        self.model, sha = context.network(INCEPTION, lambda: load_inception(context.weights_dir, context.device))
        self.weights = {"inception-2015-12-05": sha}

    def reference_identity(self):
        return json.dumps(["rfid", self.weights, "with-features", "channels-last"])

    def load_reference(self, state):
        self.reference = state

    def reset(self, tokenizer=None):
        self.reference = None
        self.seen = 0

    @torch.no_grad()
    def features(self, images_u8: Tensor) -> Tensor:
        return self.model(images_u8.to(self.device))[0].double()

    def update(self, originals, reconstructions, codes=None, batch=None):
        f = self.features(reconstructions)
        self.state["fake_sum"] += f.sum(0)
        self.state["fake_outer"] += f.t() @ f
        self.state["fake_n"] += len(f)
        index = (batch or {}).get("index")
        if self.resamples:
            self.state["kept_fake"].append(f.float())
            self.state["kept_index"].append(index.to(self.device, torch.long)
                                            if isinstance(index, Tensor) and len(index) == len(f)
                                            else torch.arange(self.seen, self.seen + len(f), device=self.device))
        self.seen += len(f)
        if self.reference is None:  # the originals' features, computed once when the AR probe's gFID asks too
            r = self.context.shared(INCEPTION_FEATURES, originals, self.features) \
                if getattr(self, "context", None) is not None else self.features(originals)
            self.state["real_sum"] += r.sum(0)
            self.state["real_outer"] += r.t() @ r
            self.state["real_n"] += len(r)
            if self.resamples:
                self.state["kept_real"].append(r.float())

    @staticmethod
    def stats(s: Tensor, outer: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        n = float(n)
        mu = s / n
        cov = (outer - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov

    def _sorted(self) -> tuple[Tensor, Tensor | None, Tensor] | None:
        """(indices, originals' features or None, reconstructions' features), in dataset order."""
        if not self.state["kept_fake"]:
            return None
        index = self.cat_state("kept_index")
        order = torch.argsort(index, stable=True)
        real = self.cat_state("kept_real")[order] if self.state["kept_real"] else None
        return index[order], real, self.cat_state("kept_fake")[order]

    def reference_state(self) -> dict[str, Tensor]:
        """On the CPU: a cache file loads on any machine."""
        out = {k: self.state[k].cpu() for k in ("real_sum", "real_outer", "real_n")}
        kept = self._sorted()
        if kept is not None and kept[1] is not None:
            out["real_index"], out["real_features"] = kept[0].cpu(), kept[1].cpu()
        return out

    def compute(self) -> MetricResult:
        n = int(float(self.state["fake_n"]))
        if n < 2:
            raise ValueError("rFID needs at least 2 images")
        pairs = self._paired()
        if pairs is not None:  # the features themselves: the trace term from symmetric eigenvalues, no sqrtm
            x, y = pairs
            value = resampled_fid(x, y, torch.ones(len(x), dtype=torch.float64, device=x.device))
        else:
            ref = self.reference or self.reference_state()
            mu1, s1 = self.stats(ref["real_sum"], ref["real_outer"], ref["real_n"])
            mu2, s2 = self.stats(self.state["fake_sum"], self.state["fake_outer"], self.state["fake_n"])
            value = frechet_distance(mu1, s1, mu2, s2)
        flags = ({"rfid": f"rank-deficient: N = {n} < {FID_DIMS} images, fewer than the Inception feature "
                          "dimensions (singular covariance; compare only at equal N; its interval approximate)"}
                 if n < FID_DIMS else {})
        return MetricResult(values={"rfid": value}, intervals=self._intervals(value, pairs), flags=flags)

    def _paired(self) -> tuple[Tensor, Tensor] | None:
        """(originals', reconstructions' features) of the measured images, paired, float64
        on the metric's device; None when they were not kept (``resamples=0``)."""
        kept = self._sorted() if self.resamples else None
        if kept is None:
            return None
        index, real, fake = kept
        if self.reference is not None:  # the originals' features from the cache, for these very images
            if not torch.equal(self.reference.get("real_index", torch.zeros(0)).to(index.device), index):
                return None
            real = self.reference["real_features"]
        if real is None or len(index) < 2:
            return None
        return real.to(self.device, torch.float64), fake.to(self.device, torch.float64)

    def _intervals(self, value: float, pairs) -> dict[str, tuple[float, float]]:
        from tokzoo.bench.stats import resample_counts, resample_interval

        if pairs is None:  # no features kept, or not of these images
            return {}
        x, y = pairs
        device = x.device
        resampled = [resampled_fid(x, y, torch.from_numpy(w).to(device))
                     for draws in resample_counts(len(x), self.resamples, seed=0, chunk=8) for w in draws]
        ci = resample_interval(value, resampled)
        return {"rfid": ci} if ci is not None else {}
