import torch

from clipzss_d2.modeling.training.plm.synthesizer import PseudoWeightSynthesizer, region_centroids


def test_region_centroids_against_loops():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 5, 4, 6, generator=g)
    labels = torch.randint(0, 4, (2, 4, 6), generator=g)
    labels[0][labels[0] == 2] = 255  # class 2 absent from image 0
    labels[1, 0, :3] = 255
    labels[1, 1, 0] = 9  # id beyond num_classes: ignored
    cents, present = region_centroids(dense, labels, 4)
    assert cents.shape == (2, 4, 5) and present.shape == (2, 4)
    for b in range(2):
        for k in range(4):
            members = [
                dense[b, :, i, j] for i in range(4) for j in range(6) if labels[b, i, j] == k
            ]
            assert bool(present[b, k]) == bool(members)
            if members:
                torch.testing.assert_close(cents[b, k], torch.stack(members).mean(0))
            else:
                assert (cents[b, k] == 0).all()
    assert not present[0, 2]


def test_region_centroids_gradient_and_empty_class_space():
    dense = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 0], [1, 255]]])
    cents, _ = region_centroids(dense, labels, 2)
    cents.sum().backward()
    # pixel weights 1/2, 1/2, 1, 0
    torch.testing.assert_close(dense.grad[0, 0], torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    cents, present = region_centroids(dense.detach(), labels, 0)
    assert cents.shape == (1, 0, 3) and present.shape == (1, 0)


def make_inputs(b=2, q=5, c=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(b, q, c, generator=g)
    valid = torch.ones(b, q, dtype=torch.bool)
    valid[0, 3:] = False
    cls = torch.randn(b, c, generator=g) * 4
    patches = torch.randn(b, c, 3, 3, generator=g)
    return queries, valid, cls, patches


def test_synthesizer_shapes_norm_and_padding():
    torch.manual_seed(0)
    syn = PseudoWeightSynthesizer(16, num_layers=2, num_heads=4).eval()
    queries, valid, cls, _ = make_inputs()
    out = syn(queries, valid, cls)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 5))
    # padded queries must not influence valid ones (key padding mask)
    q2 = queries.clone()
    q2[0, 3:] = 100 * torch.randn(2, 16)
    out2 = syn(q2, valid, cls)
    torch.testing.assert_close(out2[0, :3], out[0, :3])
    # the CLS memory does influence the prototypes
    assert not torch.allclose(syn(queries, valid, -cls), out, atol=1e-4)
    # an image with no valid query stays finite; Q = 0 gives an empty result
    valid[1] = False
    assert torch.isfinite(syn(queries, valid, cls)).all()
    assert syn(queries[:, :0], valid[:, :0], cls).shape == (2, 0, 16)


def test_synthesizer_patch_tokens_and_gradients():
    torch.manual_seed(0)
    syn = PseudoWeightSynthesizer(16, num_layers=1, num_heads=4, use_patch_tokens=True)
    queries, valid, cls, patches = make_inputs()
    queries.requires_grad_(True)
    out = syn(queries, valid, cls, patches)
    plain = PseudoWeightSynthesizer(16, num_layers=1, num_heads=4)
    plain.load_state_dict(syn.state_dict())
    assert not torch.allclose(out, plain(queries, valid, cls), atol=1e-4)
    (out[valid] * torch.randn(int(valid.sum()), 16)).sum().backward()
    assert queries.grad.abs().sum() > 0
    assert all(p.grad is not None for p in syn.parameters() if p.requires_grad)
    # identity-initialised output projection
    torch.testing.assert_close(plain.out_proj.weight, torch.eye(16))
