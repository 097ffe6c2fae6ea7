"""Delta Stethoscope statistics on synthetic tensors: float64 references, the exact histogram, bimodality."""

import math

import numpy as np
import pytest
import torch

from sfn_merge_plugin.delta.stats import DeltaStats, HistSpec, bimodality, chunk_stats


def reference(a, b, spec=HistSpec()):
    """Every statistic in float64, straight from the definitions."""
    a, b = a.double().reshape(a.shape[0], -1), b.double().reshape(b.shape[0], -1)
    d = b - a
    na, nb, nd = a.norm().item(), b.norm().item(), d.norm().item()
    r = (d / (a.abs() + spec.eps)).reshape(-1).numpy()
    return {
        "norm_base": na, "norm_tuned": nb, "norm_delta": nd, "rel_delta": nd / na,
        "cosine": (a * b).sum().item() / (na * nb), "max_abs_delta": d.abs().max().item(),
        "frac_changed": (d != 0).double().mean().item(), "r": r,
    }


def assert_matches_reference(stats: DeltaStats, ref: dict, rel=1e-6):
    row = stats.row()
    for key in ("norm_base", "norm_tuned", "norm_delta", "rel_delta", "cosine", "max_abs_delta", "frac_changed"):
        assert row[key] == pytest.approx(ref[key], rel=rel, abs=0), key


def binned_reference(r: np.ndarray, spec: HistSpec):
    """float64 bin index (0 below, bins+1 at/above) and which elements sit within 1e-4 bin of an edge."""
    pos = r * (spec.bins / (2 * spec.range)) + spec.bins / 2
    idx = np.clip(np.floor(pos) + 1, 0, spec.bins + 1).astype(np.int64)
    near_edge = np.abs(pos - np.round(pos)) < 1e-4
    return np.bincount(idx, minlength=spec.bins + 2), int(near_edge.sum())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(300, 97), (5000,)])
def test_statistics_equal_a_float64_reference(dtype, shape):
    g = torch.Generator().manual_seed(0)
    a = (0.02 * torch.randn(shape, generator=g)).to(dtype)
    b = (a.float() + 0.003 * torch.randn(shape, generator=g)).to(dtype)
    b.view(-1)[::7] = a.view(-1)[::7]  # some elements unchanged
    a2, b2 = (a, b) if len(shape) == 2 else (a.reshape(1, -1), b.reshape(1, -1))
    # tiny sub-chunks: many of them, merged across rows in float64
    stats = chunk_stats(a2, b2, HistSpec(), sub_elements=500)
    ref = reference(a2, b2)
    assert_matches_reference(stats, ref)
    assert stats.numel == a.numel() and stats.changed == int((a != b).sum())
    counts, ambiguous = binned_reference(ref["r"], HistSpec())
    assert np.abs(stats.counts - counts).sum() <= 2 * ambiguous
    assert stats.counts.sum() == a.numel()


def test_histogram_keeps_the_mass_beyond_the_range_out_of_the_edge_bins():
    spec = HistSpec(bins=200, range=1.0)
    r = torch.tensor([-50.0, -3.0, -1.2, -0.995, -0.5, 0.0, 0.25, 0.995, 1.5, 7.0, 1e6], dtype=torch.float64)
    a = torch.ones(1, r.numel(), dtype=torch.float64)
    b = a + r * (1 + spec.eps)  # so that (b - a) / (|a| + eps) == r
    stats = chunk_stats(a, b, spec)
    assert stats.below == 3 and stats.above == 3
    hist = stats.hist
    assert hist.sum() == 5
    assert hist[0] == 1 and hist[-1] == 1  # -0.995 and 0.995 only, nothing piled on from beyond
    edges = spec.edges()
    for value in (-0.5, 0.0, 0.25):
        assert hist[np.searchsorted(edges, value, side="right") - 1] == 1
    row = stats.row()
    assert row["r_below"] == pytest.approx(3 / 11) and row["r_above"] == pytest.approx(3 / 11)


def test_nonfinite_elements_are_counted_and_kept_out_of_the_histogram():
    a = torch.ones(4, 8)
    b = a + 0.1
    a[0, 0], b[1, 1], a[2, 2] = math.nan, math.inf, -math.inf
    stats = chunk_stats(a, b, HistSpec())
    assert stats.nonfinite == 3
    assert stats.counts.sum() + stats.nonfinite == a.numel()
    assert math.isnan(stats.norm_base) or math.isinf(stats.norm_base)
    assert math.isnan(stats.max_abs)


def test_statistics_merge_like_one_tensor():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(64, 33, generator=g), torch.randn(64, 33, generator=g)
    whole = chunk_stats(a, b, HistSpec())
    parts = DeltaStats.total([chunk_stats(a[:10], b[:10], HistSpec()), chunk_stats(a[10:], b[10:], HistSpec())])
    assert parts.norm_delta == pytest.approx(whole.norm_delta, rel=1e-12)
    assert parts.cosine == pytest.approx(whole.cosine, rel=1e-12)
    assert (parts.counts == whole.counts).all() and parts.changed == whole.changed


def _counts(a, b, spec=HistSpec()):
    return chunk_stats(a.reshape(1, -1), b.reshape(1, -1), spec).counts


def test_clamping_fakes_bimodality_that_the_unclipped_statistic_does_not_see():
    # a fine-tune moving every weight by noise as large as the weights: r is unimodal around 0 with
    # heavy tails; clamping piles the tails into the two edge bins
    g = torch.Generator().manual_seed(2)
    a = torch.randn(200_000, generator=g)
    counts = _counts(a, a + torch.randn(200_000, generator=g))
    spec = HistSpec()
    beyond = counts[0] + counts[-1]
    central = counts[1 + spec.bins // 2 - 5: 1 + spec.bins // 2 + 5].sum()
    assert beyond > 10 * central  # the note's "50% vs 3%" regime
    assert not bimodality(counts, spec)["bimodal"]
    clamped = bimodality(counts, spec, clamped=True)
    assert clamped["bimodal"] and clamped["amplitude"] > 0.9


def test_a_real_two_peaked_change_is_bimodal():
    # shrinking every weight by 30% (plus a little noise): r = (0.7 a - a) / |a| = -0.3 sign(a), so
    # r has one mode at -0.3 (positive weights) and one at +0.3 (negative weights), none at 0
    g = torch.Generator().manual_seed(3)
    a = torch.randn(100_000, generator=g)
    b = 0.7 * a + 0.01 * torch.randn(100_000, generator=g)
    result = bimodality(_counts(a, b), HistSpec())
    assert result["bimodal"] and result["amplitude"] > 0.9
    assert sorted(result["peaks"]) == pytest.approx([-0.3, 0.3], abs=0.03)
    assert abs(result["valley"]) < 0.25


def test_noise_in_a_small_unimodal_sample_is_not_called_bimodal():
    g = torch.Generator().manual_seed(4)
    for seed in range(5):
        a = torch.randn(3000, generator=g)
        counts = _counts(a, a + 0.2 * torch.randn(3000, generator=g))
        result = bimodality(counts, HistSpec())
        assert not result["bimodal"], (seed, result)


@pytest.mark.parametrize("bad", [dict(bins=1), dict(range=0.0), dict(eps=0.0), dict(range=math.inf)])
def test_histogram_spec_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        HistSpec(**bad)


def test_a_zero_base_tensor_gives_infinite_relative_change_not_an_error():
    a = torch.zeros(3, 5)
    b = torch.tensor([[1.0, -1.0, 0.0, 2.0, -3.0]] * 3)
    stats = chunk_stats(a, b, HistSpec())
    assert stats.norm_base == 0 and stats.rel_delta == math.inf and math.isnan(stats.cosine)
    assert stats.below == 6 and stats.above == 6 and stats.hist.sum() == 3  # r = +-1e8 and the unchanged 0s
    assert stats.frac_changed == pytest.approx(12 / 15)


def test_wide_histograms_and_numpy_bf16_inputs_match_the_reference():
    # more than 254 bins: int32 keys instead of uint8; numpy BF16 arrays give what torch bf16 tensors give
    from sfn_merge_plugin.delta.stats import as_array

    g = torch.Generator().manual_seed(5)
    a = (0.02 * torch.randn(40, 300, generator=g)).to(torch.bfloat16)
    b = (a.float() + 0.004 * torch.randn(40, 300, generator=g)).to(torch.bfloat16)
    spec = HistSpec(bins=1001, range=2.0)
    stats = chunk_stats(a, b, spec, sub_elements=3000)
    ref = reference(a, b, spec)
    assert_matches_reference(stats, ref)
    counts, ambiguous = binned_reference(ref["r"], spec)
    assert np.abs(stats.counts - counts).sum() <= 2 * ambiguous and stats.counts.sum() == a.numel()
    again = chunk_stats(as_array(a), as_array(b), spec, sub_elements=3000)
    assert again.raw() == stats.raw() and (again.counts == stats.counts).all()


def test_signed_zeros_are_unchanged_and_negation_is_a_change():
    a = torch.tensor([[0.0, -0.0, 0.5, 0.25, 1.0]], dtype=torch.bfloat16)
    b = torch.tensor([[-0.0, 0.0, -0.5, 0.25, 1.0]], dtype=torch.bfloat16)
    stats = chunk_stats(a, b, HistSpec())
    assert stats.changed == 1 and stats.max_abs == 1.0  # only 0.5 -> -0.5 moved
