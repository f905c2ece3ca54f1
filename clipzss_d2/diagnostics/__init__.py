"""Diagnostics that read ground truth the method never sees; off unless asked for."""

from .pseudo_labels import PseudoLabelProbe, PseudoLabelReport, format_summary, observe_batch

__all__ = ["PseudoLabelProbe", "PseudoLabelReport", "format_summary", "observe_batch"]
