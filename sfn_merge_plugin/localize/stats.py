"""Accuracy and share-of-gap with 95% bootstrap intervals, resampling problems (and samples within each
problem when k > 1). Cells of one map share the resampled problem indices, so a share compares a cell with
the two ends on the same problems (a paired bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    value: float  # the point estimate on all problems
    low: float  # 2.5% bootstrap quantile
    high: float  # 97.5% bootstrap quantile


def resample_indices(n_problems: int, n_samples: int, draws: int, seed: int) -> tuple:
    """(problem indices [draws, n_problems], sample indices [draws, n_problems, n_samples]) shared by all cells."""
    rng = np.random.default_rng(seed)
    problems = rng.integers(0, n_problems, size=(draws, n_problems))
    samples = rng.integers(0, n_samples, size=(draws, n_problems, n_samples))
    return problems, samples


def boot_means(correct: np.ndarray, indices: tuple) -> np.ndarray:
    """Bootstrap accuracies of a [problems, samples] 0/1 matrix: one per draw."""
    problems, samples = indices
    picked = correct[problems[..., None], samples]  # [draws, problems, samples]
    return picked.reshape(picked.shape[0], -1).mean(axis=1)


def _interval(values: np.ndarray) -> tuple:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def accuracy(correct: np.ndarray, indices: tuple) -> Estimate:
    return Estimate(float(correct.mean()), *_interval(boot_means(correct, indices)))


def share(direction: str, cell: np.ndarray, base: np.ndarray, tuned: np.ndarray, indices: tuple) -> Estimate:
    """Share of the base->tuned gap a cell recovers (sufficiency: (cell - base) / gap) or destroys (necessity:
    (tuned - cell) / gap). NaN where the gap is zero; the interval uses the draws where it is not."""

    def ratio(c, b, t):
        gap = t - b
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (c - b) / gap if direction == "sufficiency" else (t - c) / gap
        return np.where(gap == 0, np.nan, r)

    point = float(ratio(np.float64(cell.mean()), np.float64(base.mean()), np.float64(tuned.mean())))
    draws = ratio(boot_means(cell, indices), boot_means(base, indices), boot_means(tuned, indices))
    return Estimate(point, *_interval(draws))


def gap(base: np.ndarray, tuned: np.ndarray, indices: tuple) -> Estimate:
    """Tuned minus base accuracy, with its interval: a gap whose interval holds 0 makes every share noise."""
    draws = boot_means(tuned, indices) - boot_means(base, indices)
    return Estimate(float(tuned.mean() - base.mean()), *_interval(draws))
