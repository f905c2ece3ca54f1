"""The exported student under onnxruntime, with the predictor's contract.

`OnnxPredictor` takes the folder `tools/export_model.py --output-kind logits` writes (model.onnx
+ export.json) and answers like `OpenVocabularyPredictor` for the export's fixed vocabulary:
uint8 BGR (or RGB) arrays in, `SegmentationResult`s at the input size out. Images are resized as
the predictor resizes them (ResizeShortestEdge to INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); the
graph gives the logits at the resized size (normalisation, padding, network, text classifier,
upsampling, as the PyTorch model computes them) and the predictor's own ``_to_result`` brings
labels and scores to the input size, so the post-processing is the same code as the predictor's.

Why: a deployment without the PyTorch network (onnxruntime runs the graph). On a 2-core CPU
it is not faster than the PyTorch predictor: 0.54x at one 512² image and 0.69x at sixteen
(SegFormer-B0, docs/benchmarks.md#figures-cpu-2026-12-08), since the PyTorch predictor holds
neither the full-size logits that this graph returns nor NCHW weights.
A `labels` export (softmax + max inside the graph, the exporter's default) is refused: its
softmax over the class axis at full resolution is slower in onnxruntime than the whole PyTorch
predictor, and it answers at the resized size, not the input's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.data import transforms as T

from .errors import UserInputError
from .export import SPEC_FILE
from .modeling.open_vocabulary import STUDENT
from .predictor import INPUT_FORMATS, SegmentationResult, _as_uint8_image, _to_result
from .vocabulary import parse_vocabulary


class OnnxPredictor:
    """`OpenVocabularyPredictor` for an exported (fixed-vocabulary) student, on onnxruntime.

    Example:
        predictor = OnnxPredictor("exported/", min_size=512, max_size=2048)
        result = predictor(cv2.imread("street.jpg"))
        result.labels, result.scores, result.class_names
    """

    def __init__(
        self,
        folder: str,
        min_size: int = 0,
        max_size: int = 0,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ):
        import onnxruntime as ort

        spec_path = os.path.join(folder, SPEC_FILE)
        try:
            with open(spec_path, encoding="utf-8") as f:
                spec = json.load(f)
        except (OSError, ValueError) as e:
            raise UserInputError(
                f"{spec_path} cannot be read ({e}): pass the --output folder of "
                f"tools/export_model.py."
            ) from e
        if "onnx" not in spec.get("files", {}):
            raise UserInputError(f"{folder} holds no ONNX export: export with --format onnx.")
        if spec["output"] != ["logits"]:
            raise UserInputError(
                f"{folder} was exported with outputs {spec['output']}: the ONNX backend needs "
                f"the logits (tools/export_model.py --output-kind logits), so that labels and "
                f"scores come back to the input size as the predictor brings them."
            )
        self.vocabulary = list(spec["vocabulary"])
        self.model_format = spec["input"]["channels"]
        self.input_dtype = np.uint8 if spec["input"]["dtype"] == "uint8" else np.float32
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(
            os.path.join(folder, spec["files"]["onnx"]), options, providers=list(providers)
        )
        shape = self.session.get_inputs()[0].shape  # ints where the export fixed the axis
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.fixed_size = tuple(shape[2:]) if all(isinstance(d, int) for d in shape[2:]) else None
        self.aug = T.ResizeShortestEdge([min_size, min_size], max_size) if min_size > 0 else None

    @classmethod
    def from_config(cls, folder: str, cfg, threads: int = 0) -> OnnxPredictor:
        """The test-time resize of `cfg` (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), as the
        predictor built from that config resizes."""
        return cls(folder, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, threads)

    segmenter = STUDENT  # an export is always a trained student: CLIP alone is not exported

    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> list[str]:
        """The export's vocabulary is fixed: it is accepted, any other is refused in one line."""
        if parse_vocabulary(vocabulary) != self.vocabulary:
            raise UserInputError(
                "This ONNX model was exported for a fixed vocabulary "
                f"({', '.join(self.class_names)}); export again for another one."
            )
        return list(self.vocabulary)

    @property
    def class_names(self) -> list[str]:
        return SegmentationResult(None, None, self.vocabulary).class_names

    def __call__(
        self, image: np.ndarray, vocabulary=None, input_format: str = "BGR"
    ) -> SegmentationResult:
        return self.predict_batch([image], vocabulary, input_format)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], vocabulary=None, input_format: str = "BGR"
    ) -> list[SegmentationResult]:
        """One result per image; images of one resized size share a run (up to the graph's
        fixed batch, if it has one)."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        prepared = [self._prepare(image, input_format) for image in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (array, _) in enumerate(prepared):
            groups.setdefault(array.shape[-2:], []).append(i)
        results: list[SegmentationResult | None] = [None] * len(prepared)
        for size, idx in groups.items():
            if self.fixed_size is not None and size != self.fixed_size:
                raise UserInputError(
                    f"This ONNX model was exported for {self.fixed_size[0]} x "
                    f"{self.fixed_size[1]} inputs, the resized image is {size[0]} x {size[1]}: "
                    f"export with --dynamic, or at this size."
                )
            step = self.fixed_batch or len(idx)
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                batch = np.stack([prepared[i][0] for i in chunk]).astype(self.input_dtype)
                (logits,) = self.session.run(None, {"image": batch})
                for i, logit in zip(chunk, torch.from_numpy(logits)):
                    results[i] = _to_result(logit, self.vocabulary, prepared[i][1])
        return results

    def _prepare(self, image, input_format: str) -> tuple[np.ndarray, tuple[int, int]]:
        """3 x h x w uint8 in the model's channel order at the test size, and the input size."""
        image = _as_uint8_image(image)
        if input_format != self.model_format:
            image = image[:, :, ::-1]
        size = image.shape[:2]
        if self.aug is not None:
            image = self.aug.get_transform(image).apply_image(image)
        return np.ascontiguousarray(image.transpose(2, 0, 1)), size
