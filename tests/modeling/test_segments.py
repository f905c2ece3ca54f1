import torch

from clipzss_d2.modeling.segments import segment_means, segment_sums


def test_against_a_loop_with_ignored_ids_weights_and_gradients():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 50, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    ids = torch.randint(-2, 7, (3, 50), generator=g)  # -2, -1 and 5, 6 are outside K = 5
    weight = torch.rand(3, 50, generator=g, dtype=torch.float64)
    sums, counts = segment_sums(values, ids, 5, weight)
    means, _ = segment_means(values, ids, 5)
    for b in range(3):
        for k in range(5):
            rows = [n for n in range(50) if ids[b, n] == k]
            ref = sum((weight[b, n] * values[b, n] for n in rows), torch.zeros(4))
            torch.testing.assert_close(sums[b, k], ref.float(), rtol=1e-5, atol=1e-6)
            expected = sum(float(weight[b, n]) for n in rows)
            assert abs(counts[b, k].item() - expected) < 1e-5
            mean = values[b, rows].mean(0).float() if rows else torch.zeros(4)
            torch.testing.assert_close(means[b, k], mean, rtol=1e-5, atol=1e-6)
    means.sum().backward()
    assert values.grad[ids < 0].abs().max() == 0 and values.grad[ids >= 5].abs().max() == 0
    assert values.grad[(ids >= 0) & (ids < 5)].abs().min() > 0
