"""Generalized zero-shot semantic segmentation evaluation."""

from .gzss_evaluation import GZSSSemSegEvaluator, compute_gzss_metrics, harmonic_mean
from .route import build_eval_student, build_gzss_evaluator, build_gzss_test_loader

__all__ = [
    "GZSSSemSegEvaluator",
    "build_eval_student",
    "build_gzss_evaluator",
    "build_gzss_test_loader",
    "compute_gzss_metrics",
    "harmonic_mean",
]
