"""tools/benchmarking/floor.py and breakdown.py: the FLOP count against hand counts, the floor's
arithmetic, and the predictor's stage breakdown (complete, same labels as the predictor, summing
to its own total). Structure only: speed goals are benchmark figures, not test assertions."""

import numpy as np
import pytest
import torch
from torch import nn

from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import TOY_CLASSES, tiny_cfg


@pytest.fixture
def bench(monkeypatch):
    from tests.helpers import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # what running a command in tools/ gives
    from benchmarking import breakdown, floor

    return floor, breakdown


def test_flops_of_a_linear_and_a_conv_equal_the_hand_count(bench):
    floor, _ = bench
    assert floor.FLOPS_PER_MAC == 2
    # nn.Linear(8 -> 4) on 3 rows: 3 x 8 x 4 multiply-adds (the bias adds are not counted)
    count = floor.count_flops(nn.Linear(8, 4), (torch.randn(3, 8),))
    assert count.flops == 2 * 3 * 8 * 4
    # 3 x 3 conv, 2 -> 5 channels, 'same' on 7 x 6: 5 x 2 x 9 multiply-adds per output pixel
    count = floor.count_flops(nn.Conv2d(2, 5, 3, padding=1), (torch.randn(1, 2, 7, 6),))
    assert count.flops == 2 * (5 * 2 * 9) * (7 * 6)
    assert set(count.by_operator) == {"conv"}


def test_attention_and_einsum_are_counted(bench):
    floor, _ = bench

    class Attention(nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    count = floor.count_flops(Attention(), (q, k, v))
    assert count.flops == 2 * (2 * 3) * 5 * 7 * (8 + 4)  # Q K^T and A V per head

    class Classify(nn.Module):  # the student's text classifier
        def forward(self, x, t):
            return torch.einsum("bchw,kc->bkhw", x, t)

    count = floor.count_flops(Classify(), (torch.randn(2, 16, 4, 5), torch.randn(10, 16)))
    assert count.flops == 2 * 2 * 16 * 4 * 5 * 10


def test_floor_is_flops_over_the_best_probe(bench):
    floor, _ = bench
    probes = [
        floor.Throughput("a", 4e9, None, [0.5, 0.4, 0.8]),  # best 10 GFLOP/s, median 8
        floor.Throughput("b", 2e9, None, [0.1, 0.2, 0.3]),  # best 20 GFLOP/s, median 10
    ]
    assert probes[0].best_gflops == pytest.approx(10)
    assert probes[0].median_gflops == pytest.approx(8)
    assert floor.floor_seconds(40e9, probes) == pytest.approx(2.0)
    # the probes measure something and report it with the same FLOP convention
    mm = floor.matmul_probe(n=64).measure(2)
    assert mm.flops == 2 * 64**3 and len(mm.times) == 2 and mm.best_gflops > 0
    assert len(mm.measure(1).times) == 3  # later timings add to the same probe
    conv = floor.conv_probe(size=8, channels=4).measure(1)
    assert conv.flops == 2 * 4 * 4 * 9 * 8 * 8


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return OpenVocabularyPredictor(
        tiny_cfg(extra_opts=["INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 128]),
        TOY_CLASSES,
    )


@pytest.mark.parametrize("size", [64, 48])  # the test size, and a resize (48 -> 64) and back
def test_breakdown_covers_every_stage_and_gives_the_predictors_labels(bench, predictor, size):
    _, breakdown = bench
    assert breakdown.STAGES == (
        "decode", "resize", "normalise", "backbone", "head", "text classifier", "upsampling",
        "argmax", "post-processing",
    )  # fmt: skip
    jpegs = breakdown.benchmark_images(size, 2)
    timer = breakdown.StageTimer()
    staged = breakdown.staged_predict(predictor, jpegs, TOY_CLASSES, timer)
    assert set(timer.totals) == set(breakdown.STAGES)
    expected = predictor.predict_batch(breakdown.decode(jpegs), TOY_CLASSES)
    for got, want in zip(staged, expected):
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
        assert got.labels.shape == (size, size)

    total, staged_total, stages, same = breakdown.stage_times(
        predictor, jpegs, TOY_CLASSES, "cpu", warmup=0, iters=2
    )
    assert same and set(stages) == set(breakdown.STAGES)
    assert all(v >= 0 for v in stages.values())
    # the stages are the staged call's whole time, less the timer's own overhead
    assert sum(stages.values()) <= staged_total
    assert sum(stages.values()) == pytest.approx(staged_total, rel=0.5)


def test_flops_of_the_student_are_counted_on_its_network_input(bench, predictor):
    floor, breakdown = bench
    jpegs = breakdown.benchmark_images(64, 1)
    x = breakdown.network_input(predictor, jpegs)
    assert tuple(x.shape) == (1, 3, 64, 64)
    text = predictor.model.text_embeddings(TOY_CLASSES)
    one = floor.student_flops(predictor.model, x, text)
    assert {"conv", "einsum"} <= set(one.by_operator)
    two = floor.student_flops(predictor.model, torch.cat([x, x]), text)
    assert two.flops == pytest.approx(2 * one.flops)


def test_post_processing_routes_are_timed_with_equal_labels(bench, predictor):
    """The section's comparison of the predictor's label routes: every route, labels equal;
    nothing when a resize is left (the routes without a resize do not apply)."""
    _, breakdown = bench
    times, same = breakdown.postprocess_alternatives(
        predictor, breakdown.benchmark_images(64, 1), TOY_CLASSES, "cpu", warmup=0, iters=1
    )
    assert tuple(times) == breakdown.POST_ROUTES and same
    assert all(ms > 0 for ms in times.values())
    assert (
        breakdown.postprocess_alternatives(
            predictor, breakdown.benchmark_images(48, 1), TOY_CLASSES, "cpu", warmup=0, iters=1
        )
        is None
    )
