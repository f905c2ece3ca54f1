"""The predictor with the demo's vocabulary, display names and colours: predict, draw, count.
Shared by demo.py (images, video) and web_demo.py (the page)."""

from __future__ import annotations

import numpy as np
from image_io import InputError
from visualization import MIN_DISPLAY_SIDE, render

from clipzss_d2.modeling.open_vocabulary import STUDENT
from clipzss_d2.predictor import SegmentationResult


class Segmenter:
    """Holds the predictor, the vocabulary's display names and colours, and how results are
    drawn (confidence threshold, legend). A predictor that is no trained student (CLIP alone)
    has its name written as a caption above every drawing."""

    def __init__(self, predictor, names, colors, threshold: float, legend: bool):
        self.predictor = predictor
        self.names = names
        self.colors = colors
        self.threshold = threshold
        self.legend = legend
        segmenter = getattr(predictor, "segmenter", STUDENT)
        self.caption = None if segmenter == STUDENT else segmenter

    def predict(self, image_rgb: np.ndarray) -> SegmentationResult:
        self.check_test_size(image_rgb)
        return self.predictor(image_rgb, input_format="RGB")

    def check_test_size(self, image: np.ndarray) -> None:
        """An image so elongated that the test resize leaves a side of 0 px cannot be segmented,
        nor one an ONNX export of fixed size cannot take: the image fails, the others go on."""
        if self.predictor.aug is None:
            return
        resize = self.predictor.aug.get_transform(image)
        new_h, new_w = getattr(resize, "new_h", 1), getattr(resize, "new_w", 1)
        if new_h < 1 or new_w < 1:
            raise InputError(
                f"{image.shape[1]}x{image.shape[0]} px is too elongated: resized to the test size "
                f"(INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST) it would be {new_w}x{new_h} px; crop it "
                f"into pieces first"
            )
        fixed = getattr(self.predictor, "fixed_size", None)  # an ONNX export without --dynamic
        if fixed is not None and (new_h, new_w) != tuple(fixed):
            raise InputError(
                f"{image.shape[1]}x{image.shape[0]} px is resized to {new_w}x{new_h} px but the "
                f"ONNX export takes {fixed[1]}x{fixed[0]} px only; export with --dynamic"
            )

    def draw(self, image_rgb, result: SegmentationResult, legend_width=None, fit=False):
        labels = result.label_map(self.threshold)
        return render(
            image_rgb,
            labels,
            self.names,
            self.colors,
            result.unlabelled_id,
            legend=self.legend,
            legend_width=legend_width,
            fit_height=fit,
            min_side=0 if fit else MIN_DISPLAY_SIDE,  # video frames keep the input's size
            caption=self.caption,
        )

    def fractions(self, labels: np.ndarray, unlabelled_id: int) -> dict[str, float]:
        """Share of the image per class, largest first, in the demo's display names."""
        ids, counts = np.unique(labels, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {
            ("unlabelled" if ids[i] == unlabelled_id else self.names[ids[i]]): round(
                float(counts[i]) / labels.size, 6
            )
            for i in order
        }
