"""PLM (Pixel Learning Module): pseudo labels on the ignored area and pseudo classifier weights."""

from .kmeans import KMeansResult, kmeans, window_seeds
from .module import PixelLearningModule, PLMOutput
from .pseudo_labels import FusedLabels, PseudoLabeler, PseudoRegions, fuse_labels, fuse_masks
from .synthesizer import PseudoWeightSynthesizer, region_centroids

__all__ = [
    "FusedLabels",
    "KMeansResult",
    "PLMOutput",
    "PixelLearningModule",
    "PseudoLabeler",
    "PseudoRegions",
    "PseudoWeightSynthesizer",
    "fuse_labels",
    "fuse_masks",
    "kmeans",
    "region_centroids",
    "window_seeds",
]
