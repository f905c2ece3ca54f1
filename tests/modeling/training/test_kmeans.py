import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from clipzss_d2.modeling.training.plm.kmeans import kmeans, window_seeds


def planted(b=2, per=20, dim=8, k=3, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(b, k, dim, generator=g) * 3
    truth = torch.arange(k).repeat_interleave(per)
    perm = torch.stack([torch.randperm(k * per, generator=g) for _ in range(b)])
    truth = truth[perm]  # B x N, shuffled
    x = centers.gather(1, truth[..., None].expand(-1, -1, dim))
    x = x + spread * torch.randn(x.shape, generator=g)
    return x, truth, centers


def same_partition(a, b):
    """True iff two label vectors define the same partition (up to renaming)."""
    a, b = a.tolist(), b.tolist()
    return len(set(zip(a, b))) == len(set(a)) == len(set(b))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_recovers_planted_clusters(metric):
    x, truth, _ = planted()
    # seeds: a single member of each planted cluster (plus an extra clashing seed)
    idx = torch.stack([torch.stack([(t == c).nonzero()[0, 0] for c in range(3)]) for t in truth])
    seeds = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
    res = kmeans(x, seeds, iters=5, metric=metric)
    for b in range(2):
        assert same_partition(res.assignments[b], truth[b])
    assert res.valid.all() and res.counts.sum(1).tolist() == [60.0, 60.0]


def test_inertia_no_worse_than_sklearn():
    g = torch.Generator().manual_seed(3)
    b, n, dim, k = 3, 150, 6, 7
    x = torch.randn(b, n, dim, generator=g, dtype=torch.float64)
    x[:, : n // 2] += 2.0  # some structure so Lloyd moves
    seeds = x[:, torch.randperm(n, generator=g)[:k]]
    res = kmeans(x, seeds, iters=10, metric="euclidean")
    for i in range(b):
        xi = x[i].numpy()
        km = KMeans(
            n_clusters=k,
            init=seeds[i].numpy(),
            n_init=1,
            max_iter=10,
            tol=0.0,
            algorithm="lloyd",
        ).fit(xi)
        cents = res.centroids[i].double().numpy()
        labels = res.assignments[i].numpy()
        ours = float(((xi - cents[labels]) ** 2).sum())
        assert ours <= km.inertia_ * (1 + 1e-5) + 1e-6
        # and the nearest-centroid assignment is consistent with the returned centroids
        d = ((xi[:, None] - cents[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(labels, d.argmin(1))


def reference_spherical_kmeans(x, seeds, iters):
    """Plain per-image numpy spherical K-Means (same empty-cluster rule: keep old centroid)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = seeds / np.linalg.norm(seeds, axis=1, keepdims=True)
    for _ in range(iters):
        lab = (x @ c.T).argmax(1)
        for j in range(len(c)):
            members = x[lab == j]
            if len(members):
                m = members.sum(0)
                c[j] = m / np.linalg.norm(m)
    return (x @ c.T).argmax(1), c


def test_cosine_matches_reference():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 5, generator=g, dtype=torch.float64)
    x[:, :20, 0] += 3
    seeds = x[:, [0, 10, 30, 40, 50]].clone()
    res = kmeans(x, seeds, iters=6, metric="cosine")
    for i in range(2):
        lab, cent = reference_spherical_kmeans(x[i].numpy(), seeds[i].numpy().copy(), 6)
        np.testing.assert_array_equal(res.assignments[i].numpy(), lab)
        np.testing.assert_allclose(res.centroids[i].numpy(), cent, atol=1e-5)


def test_masks_and_empty_clusters():
    x, truth, _ = planted(b=1, per=10, k=2, seed=2)
    far = torch.full((1, 1, x.shape[-1]), 1e3)
    seeds = torch.cat([x[:, :1], x[:, (truth[0] != truth[0, 0]).nonzero()[0]], far, x[:, :1]], 1)
    seed_valid = torch.tensor([[True, True, True, False]])
    token_valid = torch.ones(1, 20, dtype=torch.bool)
    token_valid[0, :3] = False
    res = kmeans(x, seeds, seed_valid, token_valid, iters=4, metric="euclidean")
    assert (res.assignments[0, :3] == -1).all()
    assert set(res.assignments[0, 3:].tolist()) <= {0, 1}
    # the far seed stays empty: invalid, centroid unchanged; the invalid seed gets nothing
    assert res.valid[0].tolist() == [True, True, False, False]
    torch.testing.assert_close(res.centroids[0, 2], far[0, 0])
    # centroids are means over valid tokens only
    for j in range(2):
        members = x[0, 3:][res.assignments[0, 3:] == j]
        torch.testing.assert_close(res.centroids[0, j], members.mean(0))
    assert res.counts[0].tolist() == [float((res.assignments[0] == j).sum()) for j in range(4)]


def test_window_seeds_partial_windows_and_mask():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 3, 5, 7, generator=g)
    valid = torch.rand(2, 5, 7, generator=g) > 0.3
    valid[1, 4:, 6:] = False  # last (1x1) window of image 1 fully invalid
    seeds, seed_valid = window_seeds(t, 2, valid)
    assert seeds.shape == (2, 3 * 4, 3) and seed_valid.shape == (2, 12)
    for b in range(2):
        k = 0
        for i0 in range(0, 5, 2):
            for j0 in range(0, 7, 2):
                vals = [
                    t[b, :, i, j]
                    for i in range(i0, min(i0 + 2, 5))
                    for j in range(j0, min(j0 + 2, 7))
                    if valid[b, i, j]
                ]
                assert bool(seed_valid[b, k]) == bool(vals)
                if vals:
                    torch.testing.assert_close(seeds[b, k], torch.stack(vals).mean(0))
                k += 1
    assert not seed_valid[1, -1]
    # window larger than the grid: one global-mean seed
    s, v = window_seeds(t, 8)
    torch.testing.assert_close(s[:, 0], t.mean(dim=(2, 3)))
    assert s.shape == (2, 1, 3) and v.all()
