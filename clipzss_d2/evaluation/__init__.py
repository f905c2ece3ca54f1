"""Generalized zero-shot semantic segmentation evaluation."""

from .gzss_evaluation import GZSSSemSegEvaluator, compute_gzss_metrics, harmonic_mean

__all__ = ["GZSSSemSegEvaluator", "compute_gzss_metrics", "harmonic_mean"]
