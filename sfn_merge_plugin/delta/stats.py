"""Per-chunk delta statistics in a few fused tensor passes, an exact streaming histogram, and bimodality.

For a base tensor A and its fine-tune B (D = B - A), a chunk of rows contributes
  sum A^2, sum A*D, sum D^2   accumulated in float32 per row, then in float64 across rows,
  max |D|, the number of elements with D != 0, and
  the histogram of r = D / (|A| + eps) over ALL elements: ``bins`` equal bins on [-range, range) plus
  the counts below -range and at/above +range, kept apart (the paper's clamp piled them into the edge
  bins, which alone makes a distribution look bimodal).
From these, ||A||, ||B||, ||D||, ||D||/||A|| and cos(A, B) follow without cancellation
(``||B||^2 = sum A^2 + 2 sum A*D + sum D^2``; ``1 - cos`` from the orthogonal part of D).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

SUB_CHUNK_ELEMENTS = 1 << 16  # 256 KB per float32 temporary: all passes of a sub-chunk stay in a 1 MB L2 cache


@dataclass(frozen=True)
class HistSpec:
    """Histogram of r = (b - a) / (|a| + eps): ``bins`` equal bins on [-range, range).

    The default 201 bins put r = 0 (an unchanged weight) in the middle of a bin, not on an edge;
    ``bins=200`` gives the paper's grid. Bin indices are computed in float32 (edges exact to ~1e-7)."""

    bins: int = 201
    range: float = 1.0
    eps: float = 1e-8

    def __post_init__(self):
        if not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"histogram bins must be an integer >= 2, got {self.bins!r}")
        if not (self.range > 0 and math.isfinite(self.range)):
            raise ValueError(f"histogram range must be a positive number, got {self.range!r}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps must be a positive number (it keeps r finite where a == 0), got {self.eps!r}")

    @property
    def width(self) -> float:
        return 2.0 * self.range / self.bins

    def edges(self) -> np.ndarray:
        return np.linspace(-self.range, self.range, self.bins + 1)

    def centers(self) -> np.ndarray:
        e = self.edges()
        return (e[:-1] + e[1:]) / 2

    def to_dict(self) -> dict:
        return {"bins": self.bins, "range": self.range, "eps": self.eps}


@dataclass
class DeltaStats:
    """Sums over the elements of a tensor (or of many: ``add`` merges) from which every statistic follows."""

    numel: int = 0
    aa: float = 0.0  # sum a^2
    ad: float = 0.0  # sum a * (b - a)
    dd: float = 0.0  # sum (b - a)^2
    max_abs: float = 0.0  # max |b - a|
    changed: int = 0  # elements with b != a
    nonfinite: int = 0  # elements where a or b is inf/nan (left out of the histogram)
    counts: Optional[np.ndarray] = field(default=None, repr=False)  # int64 [below, bins..., above]

    def add(self, other: "DeltaStats") -> "DeltaStats":
        self.numel += other.numel
        self.aa += other.aa
        self.ad += other.ad
        self.dd += other.dd
        self.max_abs = max(self.max_abs, other.max_abs) if not math.isnan(other.max_abs) else math.nan
        self.changed += other.changed
        self.nonfinite += other.nonfinite
        if other.counts is not None:
            self.counts = other.counts.copy() if self.counts is None else self.counts + other.counts
        return self

    @staticmethod
    def total(items) -> "DeltaStats":
        out = DeltaStats()
        for s in items:
            out.add(s)
        return out

    # -- derived statistics ------------------------------------------------------------------------
    @property
    def norm_base(self) -> float:
        return math.sqrt(self.aa) if self.aa >= 0 else math.nan

    @property
    def norm_tuned(self) -> float:
        bb = self.aa + 2.0 * self.ad + self.dd
        return math.sqrt(max(bb, 0.0)) if not math.isnan(bb) else math.nan

    @property
    def norm_delta(self) -> float:
        return math.sqrt(self.dd) if self.dd >= 0 else math.nan

    @property
    def rel_delta(self) -> float:
        if self.dd == 0:
            return 0.0
        return self.norm_delta / self.norm_base if self.aa > 0 else math.inf

    @property
    def cosine(self) -> float:
        na, nb = self.norm_base, self.norm_tuned
        if not (na > 0 and nb > 0):
            return math.nan
        parallel = (2.0 * self.ad + self.dd) / (na + nb)  # = ||B|| - ||A||
        one_minus = (self.dd - parallel * parallel) / (2.0 * na * nb)
        return min(1.0, max(-1.0, 1.0 - one_minus))

    @property
    def frac_changed(self) -> float:
        return self.changed / self.numel if self.numel else math.nan

    @property
    def below(self) -> int:
        return int(self.counts[0]) if self.counts is not None else 0

    @property
    def above(self) -> int:
        return int(self.counts[-1]) if self.counts is not None else 0

    @property
    def hist(self) -> np.ndarray:
        """Counts of the regular bins (the mass beyond the range is in ``below``/``above``)."""
        return self.counts[1:-1]

    def row(self) -> dict:
        """The per-tensor statistics written to delta.csv (fractions of ``numel`` for r beyond the range)."""
        n = self.numel or 1
        return {
            "numel": self.numel,
            "norm_base": self.norm_base,
            "norm_tuned": self.norm_tuned,
            "norm_delta": self.norm_delta,
            "rel_delta": self.rel_delta,
            "cosine": self.cosine,
            "max_abs_delta": self.max_abs,
            "frac_changed": self.frac_changed,
            "r_below": self.below / n,
            "r_above": self.above / n,
            "nonfinite": self.nonfinite,
        }

    def raw(self) -> dict:
        """The exact sums (JSON), so aggregates can be recomputed from the files."""
        return {"numel": self.numel, "aa": self.aa, "ad": self.ad, "dd": self.dd, "max_abs": self.max_abs,
                "changed": self.changed, "nonfinite": self.nonfinite}


# bf16 as numpy holds it: the 16-bit pattern in a one-field structured dtype, so arithmetic on it fails
# loudly instead of treating the bits as integers
BF16 = np.dtype([("bf16", "<u2")])


def as_array(x) -> np.ndarray:
    """A numpy view of ``x`` (a numpy array, or a CPU torch tensor: bf16 becomes :data:`BF16`)."""
    if isinstance(x, np.ndarray):
        return x
    import torch  # only when the caller hands torch tensors

    x = x.detach()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(BF16)
    return x.numpy()


def chunk_stats(a, b, spec: HistSpec, sub_elements: int = SUB_CHUNK_ELEMENTS) -> DeltaStats:
    """Statistics of two equally shaped 2-D arrays (numpy, :data:`BF16`, or torch tensors; any float
    dtype), in cache-sized groups of rows."""
    a, b = as_array(a), as_array(b)
    rows, cols = a.shape
    step = max(1, sub_elements // max(1, cols))
    ct = np.float64 if np.float64 in (a.dtype, b.dtype) else np.float32
    work = _work_buffers(min(rows, step) * cols, ct)
    out = DeltaStats()
    with np.errstate(all="ignore"):  # inf/nan inputs are counted, not warned about
        for r0 in range(0, rows, step):
            out.add(_sub_chunk(a[r0:r0 + step], b[r0:r0 + step], spec, work))
    return out


class _Work:
    """One thread's reusable sub-chunk buffers (allocated once: no page faults per sub-chunk)."""

    def __init__(self, n: int, ct):
        self.n, self.ct = n, ct
        self.a, self.b, self.d = (np.empty(n, dtype=ct) for _ in range(3))
        self.keys = np.empty(n, dtype=np.uint8)


_THREAD = threading.local()


def _work_buffers(n: int, ct) -> _Work:
    work = getattr(_THREAD, "work", None)
    if work is None or work.ct != ct or work.n < n:
        work = _THREAD.work = _Work(max(n, 1), ct)
    return work


def _as_float(src: np.ndarray, out: np.ndarray) -> None:
    """``out = float(src)``; bf16 by shifting its bit pattern into the high half of a float32 (exact)."""
    if src.dtype == BF16:
        bits = src.view(np.uint16)
        if out.dtype == np.float32:
            u = out.view(np.uint32)
            np.copyto(u, bits, casting="safe")
            np.left_shift(u, 16, out=u)
        else:
            f = np.empty(src.shape, np.uint32)
            np.copyto(f, bits, casting="safe")
            np.left_shift(f, 16, out=f)
            np.copyto(out, f.view(np.float32))
    else:
        np.copyto(out, src, casting="unsafe")


def _sub_chunk(a: np.ndarray, b: np.ndarray, spec: HistSpec, work: _Work) -> DeltaStats:
    """One cache-sized sub-chunk: ~15 vectorised numpy passes over L2-resident buffers (a numpy ufunc has
    ~1 us of fixed cost, a torch op several; numpy alone also spares the CLI torch's start-up)."""
    rows, cols = a.shape
    n = rows * cols
    A, B, D = (x[:n].reshape(rows, cols) for x in (work.a, work.b, work.d))
    _as_float(a, A)
    _as_float(b, B)
    np.subtract(B, A, out=D)
    # per-row dot products in the compute dtype (BLAS), then float64 across rows
    f64 = np.float64
    s_aa = float(np.matmul(A[:, None, :], A[:, :, None]).sum(dtype=f64))
    s_ad = float(np.matmul(A[:, None, :], D[:, :, None]).sum(dtype=f64))
    s_dd = float(np.matmul(D[:, None, :], D[:, :, None]).sum(dtype=f64))
    if not (math.isfinite(s_aa) and math.isfinite(s_dd)):  # inf/nan in the inputs: the careful path
        return _sub_chunk_nonfinite(A, D, spec)
    changed = int(np.count_nonzero(np.not_equal(A, B)))  # a != b exactly when b - a != 0 (finite values)
    m = max(float(D.max()), -float(D.min()))
    # bin of r = d / (|a| + eps): 0 = below -range, 1..bins = regular, bins + 1 = at/above +range
    T = B
    np.abs(A, out=T)
    T += spec.eps
    np.divide(D, T, out=T)
    T *= spec.bins / (2.0 * spec.range)
    T += spec.bins / 2.0 + 1.0
    np.clip(T, 0.0, spec.bins + 1.0, out=T)
    if spec.bins + 2 <= 256:  # uint8 keys: the cheapest conversion
        keys = work.keys[:n]
        np.copyto(keys, T.reshape(-1), casting="unsafe")  # truncation = floor on [0, bins + 1]
    else:
        keys = T.reshape(-1).astype(np.int32)
    counts = np.bincount(keys, minlength=spec.bins + 2)
    return DeltaStats(n, s_aa, s_ad, s_dd, m, changed, 0, counts)


def _sub_chunk_nonfinite(A: np.ndarray, D: np.ndarray, spec: HistSpec) -> DeltaStats:
    """The same statistics where an input is inf/nan (or a square overflows): non-finite elements counted
    and kept out of the histogram, max |d| = nan if any."""
    f64 = np.float64
    s_aa = float((A * A).sum(axis=1).sum(dtype=f64))
    s_ad = float((A * D).sum(axis=1).sum(dtype=f64))
    s_dd = float((D * D).sum(axis=1).sum(dtype=f64))
    changed = int(np.count_nonzero(D))  # nan counts as changed
    good = np.isfinite(A) & np.isfinite(D)
    nonfinite = int(D.size - np.count_nonzero(good))
    m = math.nan if nonfinite else float(np.abs(D).max())
    r = D[good] / (np.abs(A[good]) + A.dtype.type(spec.eps))
    pos = np.clip(r * (spec.bins / (2.0 * spec.range)) + (spec.bins / 2.0 + 1.0), 0.0, spec.bins + 1.0)
    counts = np.bincount(pos.astype(np.int32), minlength=spec.bins + 2)
    return DeltaStats(int(A.size), s_aa, s_ad, s_dd, m, changed, nonfinite, counts)


# -- bimodality ------------------------------------------------------------------------------------
BIMODAL_MIN_AMPLITUDE = 0.1
BIMODAL_MIN_Z = 6.0


def _coarse_factor(bins: int, target: int = 30) -> int:
    """The largest divisor k of ``bins`` with bins / k >= target (so coarse bins tile the range exactly)."""
    best = 1
    for k in range(1, bins + 1):
        if bins % k == 0 and bins // k >= target:
            best = k
    return best


def bimodality(counts, spec: HistSpec, clamped: bool = False) -> dict:
    """Bimodality of r from its histogram, computed on the regular bins only (nothing folded in).

    The histogram is merged into >= 30 coarse bins. Let P be the highest bin; for every other local
    maximum Q, the valley V is the lowest bin between them. The secondary peak is the Q with the
    deepest dip c_Q - c_V. Then
        amplitude A = (c_Q - c_V) / c_Q            (bimodality amplitude, Zhang et al. 2003; 0 = one mode)
        z           = (c_Q - c_V) / sqrt(c_Q + c_V) (the dip in Poisson standard deviations)
    and the distribution is called bimodal when A >= 0.1 and z >= 6 (a dip noise cannot make).
    ``clamped=True`` first folds the mass beyond the range into the edge bins, as the paper's clamp
    did: shown only to expose that artefact."""
    counts = np.asarray(counts, dtype=np.float64)
    regular = counts[1:-1].copy()
    if clamped:
        regular[0] += counts[0]
        regular[-1] += counts[-1]
    k = _coarse_factor(spec.bins)
    coarse = regular.reshape(-1, k).sum(axis=1)
    width = spec.width * k
    centers = -spec.range + width * (np.arange(coarse.size) + 0.5)
    result = {"amplitude": 0.0, "z": 0.0, "bimodal": False, "peaks": [], "valley": None, "n": int(regular.sum())}
    if coarse.sum() <= 0:
        return result
    p = int(np.argmax(coarse))
    result["peaks"] = [round(float(centers[p]), 6)]
    best = None
    padded = np.concatenate([[-1.0], coarse, [-1.0]])
    for q in range(coarse.size):
        if q == p or not (padded[q + 1] > padded[q] and padded[q + 1] >= padded[q + 2]):
            continue
        lo, hi = (q, p) if q < p else (p, q)
        if hi - lo < 2:
            continue
        v = lo + 1 + int(np.argmin(coarse[lo + 1:hi]))
        dip = coarse[q] - coarse[v]
        if dip > 0 and (best is None or dip > best[0]):
            best = (dip, q, v)
    if best is None:
        return result
    dip, q, v = best
    amp = dip / coarse[q]
    z = dip / math.sqrt(coarse[q] + coarse[v])
    result.update(amplitude=round(float(amp), 6), z=round(float(z), 3),
                  bimodal=bool(amp >= BIMODAL_MIN_AMPLITUDE and z >= BIMODAL_MIN_Z),
                  peaks=[round(float(centers[p]), 6), round(float(centers[q]), 6)],
                  valley=round(float(centers[v]), 6))
    return result
