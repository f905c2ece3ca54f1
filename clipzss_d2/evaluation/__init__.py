"""Generalized zero-shot semantic segmentation evaluation."""
