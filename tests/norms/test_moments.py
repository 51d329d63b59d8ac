"""Population moments of a layer's input: exact at mean 1000, std 0.001, where plain float64 sums are not."""

from __future__ import annotations

import pytest
import torch

from normzoo.norms.moments import PopulationMoments, channel_mean


def far_from_zero(n: int = 4096) -> torch.Tensor:
    """``(n, 3, 2, 2)`` float64 inputs with per-channel mean about 1000 and std 0.001."""
    generator = torch.Generator().manual_seed(0)
    return 1000.0 + 0.001 * torch.randn(n, 3, 2, 2, generator=generator, dtype=torch.float64)


def oracle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-pass per-channel mean and unbiased variance over all but dim 1."""
    rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    return rows.mean(1), rows.var(1, correction=1)


def test_shifted_sums_match_the_two_pass_oracle_where_plain_sums_do_not():
    x = far_from_zero()
    mean, var = oracle(x)
    moments = PopulationMoments()
    for batch in x.split(512):
        moments.add(batch)
    got_mean, got_var = moments.mean_and_var()
    assert moments.count == x.numel() // 3 and moments.batches == 8
    torch.testing.assert_close(got_mean, mean, rtol=1e-14, atol=0.0)
    assert ((got_var - var).abs() / var).max() < 1e-8
    rows = x.transpose(0, 1).reshape(3, -1)  # the plain sums this replaces lose the variance
    n = rows.shape[1]
    plain = (rows.square().sum(1) - rows.sum(1) ** 2 / n) / (n - 1)
    assert ((plain - var).abs() / var).max() > 1e-6


def test_sums_of_parts_with_a_shared_shift_add_up_to_the_whole():
    """What DDP ranks do: each sums its shard with the same shift; the totals give the union's moments."""
    x = far_from_zero()
    shift = channel_mean(x[:7])
    parts = [PopulationMoments(shift) for _ in range(2)]
    parts[0].add(x[:1000])
    parts[1].add(x[1000:])
    mean, var = parts[0].mean_and_var(parts[0].sums + parts[1].sums)
    expected_mean, expected_var = oracle(x)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-14, atol=0.0)
    assert ((var - expected_var).abs() / expected_var).max() < 1e-8


def test_non_finite_batches_are_found_by_index():
    moments = PopulationMoments()
    moments.add(torch.ones(4, 2))
    moments.add(torch.tensor([[1.0, float("nan")], [2.0, 3.0]]))
    moments.add(torch.ones(4, 2))
    assert not moments.finite() and moments.first_non_finite_batch() == 1
    clean = PopulationMoments()
    clean.add(torch.randn(4, 2))
    assert clean.finite() and clean.first_non_finite_batch() is None


def test_mean_and_var_needs_an_input():
    with pytest.raises(ValueError, match="at least one input"):
        PopulationMoments().mean_and_var()
