import math

import pytest
import torch
import torch.nn.functional as F

from clipzss_d2.modeling.training.plm.pseudo_labels import PseudoLabeler, fuse_labels, fuse_masks


def in_plane(deg, dim=6, axis=(0, 1)):
    v = torch.zeros(dim)
    v[axis[0]], v[axis[1]] = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return v


def one_scale(vectors, sizes=None):
    c = torch.stack(vectors)[None]
    s = torch.tensor([sizes or [1.0] * len(vectors)])
    return c, s, torch.ones_like(s, dtype=torch.bool)


def groups_of(res):
    """Membership as a set of frozensets of input mask indices."""
    out = {}
    for i, g in enumerate(res.membership[0].tolist()):
        if g >= 0:
            out.setdefault(g, set()).add(i)
    return {frozenset(v) for v in out.values()}


def test_agglomerative_merges_pairs_above_threshold_without_chaining():
    # x-y: cos 0.96, y-z: cos 0.95 (both > 0.9), x-z: cos 0.82. x is heavier, so the merged
    # centroid sits near x and z (cos 0.86 to it) must stay apart: no single-linkage chaining.
    x, y, z = in_plane(0), in_plane(16.26), in_plane(34.45)
    assert F.cosine_similarity(x, y, 0) > 0.9 and F.cosine_similarity(y, z, 0) > 0.9
    far = in_plane(0, axis=(2, 3))
    res = fuse_masks([one_scale([x, far], [3.0, 5.0]), one_scale([y, z], [1.0, 2.0])], 0.9)
    assert groups_of(res) == {frozenset({0, 2}), frozenset({1}), frozenset({3})}
    # merged centroid = normalised size-weighted mean of its members
    g = res.membership[0, 0]
    torch.testing.assert_close(res.centroids[0, g], F.normalize(3 * x + 1 * y, dim=0))
    assert res.sizes[0, g] == 4.0
    assert int(res.valid.sum()) == 3


def test_agglomerative_within_scale_and_each_mask_once():
    # three near-duplicates (all pairwise > 0.99) of one scale collapse into one group
    a, b, c = in_plane(0), in_plane(3), in_plane(6)
    other = in_plane(90)
    res = fuse_masks([one_scale([a, b, other]), one_scale([c])], 0.9)
    assert groups_of(res) == {frozenset({0, 1, 3}), frozenset({2})}
    torch.testing.assert_close(
        res.centroids[0, res.membership[0, 0]], F.normalize(a + b + c, dim=0)
    )


def test_cross_scale_one_to_one():
    a, b, c = in_plane(0), in_plane(3), in_plane(6)
    # scale 1 = [a, b] (similar to each other, never merged within a scale);
    # scale 2 = [c]: above the threshold with both, but only its mutual nearest (b) takes it.
    res = fuse_masks([one_scale([a, b]), one_scale([c])], 0.9, mode="cross_scale")
    assert groups_of(res) == {frozenset({0}), frozenset({1, 2})}
    # a new mask below the threshold is added as its own entry
    d = in_plane(60)
    res = fuse_masks([one_scale([a]), one_scale([d, b])], 0.9, mode="cross_scale")
    assert groups_of(res) == {frozenset({0, 2}), frozenset({1})}
    assert int(res.valid.sum()) == 2


@pytest.mark.parametrize("mode", ["agglomerative", "cross_scale"])
def test_fusion_invariants_random(mode):
    g = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(2, 5, 8, generator=g), dim=-1)
    scales = []
    for k in (7, 5, 3):
        pick = torch.randint(0, 5, (2, k), generator=g)
        c = F.normalize(
            base.gather(1, pick[..., None].expand(-1, -1, 8))
            + 0.15 * torch.randn(2, k, 8, generator=g),
            dim=-1,
        )
        s = torch.randint(1, 10, (2, k), generator=g).float()
        v = torch.rand(2, k, generator=g) > 0.15
        scales.append((c, s, v))
    res = fuse_masks(scales, 0.9, mode=mode)
    cents = torch.cat([s[0] for s in scales], 1)
    sizes = torch.cat([s[1] for s in scales], 1)
    valid = torch.cat([s[2] for s in scales], 1)
    for b in range(2):
        member = res.membership[b]
        assert ((member >= 0) == valid[b]).all()  # every valid mask is in exactly one group
        groups = sorted(set(member[member >= 0].tolist()))
        assert groups == res.valid[b].nonzero()[:, 0].tolist()
        for gi in groups:
            idx = (member == gi).nonzero()[:, 0]
            ref = F.normalize((cents[b, idx] * sizes[b, idx, None]).sum(0), dim=0)
            torch.testing.assert_close(res.centroids[b, gi], ref)
            assert res.sizes[b, gi] == sizes[b, idx].sum()
        if mode == "agglomerative":
            u = res.centroids[b, groups]
            sim = u @ u.T - 2 * torch.eye(len(groups))
            assert sim.max() <= 0.9  # nothing left above the threshold


def planted_tokens(seed=0, noise=0.05):
    """8x8 token grid: sky (top rows), ground (bottom rows), an object, a 2-token speck."""
    g = torch.Generator().manual_seed(seed)
    dirs = F.normalize(torch.randn(4, 16, generator=g), dim=-1)
    truth = torch.zeros(8, 8, dtype=torch.long)
    truth[4:] = 1
    truth[2:6, 2:5] = 2  # object of 12 tokens
    truth[0, 6:8] = 3  # speck of 2 tokens
    tokens = dirs[truth] + noise * torch.randn(8, 8, 16, generator=g)
    return tokens.permute(2, 0, 1)[None], truth


def test_labeler_recovers_planted_regions():
    tokens, truth = planted_tokens()
    labeler = PseudoLabeler(window_sizes=(2, 4, 8), iters=10, threshold=0.9)
    out = labeler(tokens)
    region = out.region_map[0]
    assert region.shape == (8, 8) and (region >= 0).all()
    pairs = set(zip(region.flatten().tolist(), truth.flatten().tolist()))
    assert len(pairs) == 4 and len({p[0] for p in pairs}) == 4  # one region per planted class
    # ids by decreasing size: ground (20), sky (30)... check sizes are sorted
    sizes = out.sizes[0, :4]
    assert sizes.tolist() == sorted(sizes.tolist(), reverse=True)
    assert sizes.sum() == 64 and out.valid[0, :4].all() and not out.valid[0, 4:].any()
    # region centroids = normalised mean of the normalised member tokens
    flat = F.normalize(tokens[0].flatten(1).T, dim=-1)
    for r in range(4):
        ref = F.normalize(flat[region.flatten() == r].mean(0), dim=0)
        torch.testing.assert_close(out.centroids[0, r], ref)


def test_labeler_min_size_max_regions_and_padding():
    tokens, truth = planted_tokens()
    out = PseudoLabeler(min_region_patches=3)(tokens)
    assert (out.region_map[0][truth == 3] == -1).all()  # speck dropped
    assert int(out.valid.sum()) == 3
    out = PseudoLabeler(max_regions=2)(tokens)
    kept = set(out.region_map[0].unique().tolist())
    assert kept == {-1, 0, 1}
    # the two largest planted regions (sky 30-ish and ground 20) are the kept ones
    sky_ground = (truth == 0) | (truth == 1)
    assert (out.region_map[0][sky_ground] >= 0).all()
    assert (out.region_map[0][~sky_ground] == -1).all()
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    valid[:, :, 6:] = False
    out = PseudoLabeler()(tokens, valid)
    assert (out.region_map[0][:, 6:] == -1).all() and (out.region_map[0][:, :6] >= 0).all()
    assert out.sizes.sum() == 48


def test_labeler_euclidean_and_cross_scale_run():
    tokens, truth = planted_tokens()
    for kw in ({"metric": "euclidean"}, {"fusion_mode": "cross_scale"}):
        out = PseudoLabeler(**kw)(tokens.repeat(2, 1, 1, 1))
        assert out.region_map.shape == (2, 8, 8)
        for b in range(2):
            pairs = set(zip(out.region_map[b].flatten().tolist(), truth.flatten().tolist()))
            # regions never straddle two planted classes
            assert len({p[0] for p in pairs}) == len(pairs)


def hand_fuse(labels, region_up, num_seen, valid):
    """Loop version of fuse_labels' documented rule."""
    out = []
    for b in range(labels.shape[0]):
        covering = sorted(
            {
                int(region_up[b, i, j])
                for i in range(labels.shape[1])
                for j in range(labels.shape[2])
                if labels[b, i, j] == 255 and valid[b, i, j] and region_up[b, i, j] >= 0
            }
        )
        ids = {r: q for q, r in enumerate(covering)}
        f = labels[b].clone()
        for i in range(labels.shape[1]):
            for j in range(labels.shape[2]):
                r = int(region_up[b, i, j])
                if not valid[b, i, j]:
                    f[i, j] = 255
                elif labels[b, i, j] == 255 and r in ids:
                    f[i, j] = num_seen + ids[r]
        out.append((f, len(covering), covering))
    return out


def test_fuse_labels_against_loops():
    g = torch.Generator().manual_seed(1)
    b, s = 3, 4
    labels = torch.randint(0, s, (b, 8, 8), generator=g)
    labels[torch.rand(b, 8, 8, generator=g) < 0.5] = 255
    labels[2] = 0  # image without ignored pixels: no pseudo ids
    region_map = torch.randint(-1, 5, (b, 4, 4), generator=g)
    region_map[0, 0, 0] = 7  # a region id used by one cell only
    valid = torch.ones(b, 8, 8, dtype=torch.bool)
    valid[1, :, 6:] = False
    out = fuse_labels(labels, region_map, s, valid, num_regions=8)
    region_up = region_map.repeat_interleave(2, 1).repeat_interleave(2, 2)
    for i, (f, n, covering) in enumerate(hand_fuse(labels, region_up, s, valid)):
        assert torch.equal(out.labels[i], f)
        assert int(out.num_pseudo[i]) == n
        assert out.pseudo_region[i, :n].tolist() == covering
        assert (out.pseudo_region[i, n:] == -1).all()
    # pseudo ids appear only where the label was 255
    is_pseudo = (out.labels >= s) & (out.labels != 255)
    assert (labels[is_pseudo] == 255).all()
    assert int(out.num_pseudo[2]) == 0 and torch.equal(out.labels[2], labels[2])


def test_fuse_labels_seen_fraction_filter():
    labels = torch.full((1, 4, 4), 255)
    labels[0, :3, :2] = 1  # region 0 (left half): 6 of 8 pixels seen-labelled
    labels[0, 0, 2] = 1  # region 1 (right half): 1 of 8
    region_map = torch.tensor([[[0, 1], [0, 1]]])  # 2x2 -> left/right halves
    out = fuse_labels(labels, region_map, 2, num_regions=2)
    assert out.num_pseudo.tolist() == [2]
    assert (out.labels[0, 3, :2] == 2).all() and (out.labels[0, 1:, 2:] == 3).all()
    out = fuse_labels(labels, region_map, 2, num_regions=2, max_seen_fraction=0.5)
    assert out.num_pseudo.tolist() == [1] and out.pseudo_region[0].tolist() == [1, -1]
    assert (out.labels[0, 3, :2] == 255).all() and (out.labels[0, 1:, 2:] == 2).all()
    assert out.labels[0, 0, 2] == 1
