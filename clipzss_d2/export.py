"""Export the student with a fixed vocabulary to TorchScript and ONNX, and prove the artefacts.

The artefact (`FixedVocabularySegmenter`) is backbone + embedding head + the vocabulary's CLIP
text embeddings as a K x C constant + the logit scale; no CLIP module or weight is inside, which
`check_no_clip` verifies on the written files. Every artefact is also run against the PyTorch
model (CLIPZSS.forward) on random inputs. `tools/export_model.py` is the command line over
`export_student`; the steps are public so tests and other tools can reuse them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import UserInputError
from .modeling.clip_alone import refuse_clip_alone
from .modeling.inference import TestTimeInference, dense_logits
from .modeling.student import StudentForward
from .predictor import OpenVocabularyPredictor
from .utils.io import atomic_write_path
from .vocabulary import display_name

logger = logging.getLogger(__name__)

# Everything an exported model may contain; anything else (e.g. CLIP's token_embedding,
# transformer or visual weights) fails the check.
SPEC_FILE = "export.json"  # what an export wrote, and for which vocabulary and input
ALLOWED_PREFIXES = (
    "backbone.",
    "embedding_head.",
    "text_embeddings",
    "logit_scale",
    "pixel_mean",
    "pixel_std",
)


class FixedVocabularySegmenter(StudentForward, nn.Module):
    """The deployable student: backbone + embedding head + a baked-in text classifier.

    Holds the vocabulary's text embeddings as a buffer and nothing of CLIP. Input: N x 3 x H x W
    uint8 or float (0..255) in the channel order of the model's INPUT.FORMAT, any H, W (padded
    inside to the size divisibility). Output: N x K x H x W logits, or (labels N x H x W int64,
    scores N x H x W float = softmax probability of the predicted class).
    """

    def __init__(self, model: nn.Module, vocabulary: Sequence[str], output: str = "logits"):
        super().__init__()
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got {output!r}")
        self.backbone = model.backbone
        self.embedding_head = model.embedding_head
        self.size_divisibility = int(model.size_divisibility)
        self.output = output
        self.vocabulary = list(vocabulary)
        text = model.text_embeddings(self.vocabulary).detach().float()
        self.register_buffer("text_embeddings", text.clone())
        self.register_buffer("logit_scale", model.logit_scale.detach().float().clone())
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1))
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1))

    def logits_fn(self, images: torch.Tensor) -> torch.Tensor:
        return self.student_logits(images, self.text_embeddings)

    def forward(self, images: torch.Tensor):
        x = (images.float() - self.pixel_mean) / self.pixel_std
        logits = dense_logits(self.logits_fn, x, self.size_divisibility)
        if self.output == "logits":
            return logits
        scores, labels = logits.softmax(dim=1).max(dim=1)
        return labels, scores


@dataclass
class ExportOptions:
    """What to write: the command line's --format, --height, ... (see tools/export_model.py)."""

    formats: Sequence[str] = ("torchscript", "onnx")
    height: int = 512
    width: int = 512
    dynamic: bool = False
    input_dtype: str = "uint8"
    output_kind: str = "labels"
    onnx_exporter: str = "dynamo"
    opset: int | None = None

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise UserInputError(
                f"--height and --width must be positive pixel counts, got {self.height} x "
                f"{self.width}."
            )
        if self.opset is not None and self.opset < 1:
            raise UserInputError(f"--opset must be a positive ONNX opset, got {self.opset}.")

    @property
    def files(self) -> list[str]:
        """The files an export writes into its --output folder."""
        names = {"torchscript": "model.ts", "onnx": "model.onnx"}
        return [names[f] for f in self.formats] + [SPEC_FILE]

    @property
    def output_names(self) -> list[str]:
        return ["logits"] if self.output_kind == "logits" else ["labels", "scores"]


def check_export_output(output_dir: str, options: ExportOptions, overwrite: bool = False) -> None:
    """An export writes model.ts / model.onnx / export.json into `output_dir`. It may replace
    them only where an earlier export wrote them (its export.json lists them), or with
    `overwrite`; the folder must be a folder. Checked before the model is loaded."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise UserInputError(f"--output {output_dir} exists and is not a folder: name a folder.")
    present = [f for f in options.files if os.path.lexists(os.path.join(output_dir, f))]
    if overwrite or not present:
        return
    ours = set(_earlier_export_files(os.path.join(output_dir, SPEC_FILE)))
    foreign = [f for f in present if f not in ours]
    if foreign:
        raise UserInputError(
            f"--output {output_dir} already holds {', '.join(foreign)}, not written by an "
            f"earlier export: name another folder, or pass --overwrite to replace them."
        )


def _earlier_export_files(spec_path: str) -> list[str]:
    """The files an earlier export's export.json lists (itself included); [] if it is none."""
    try:
        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)
        listed = list(spec["files"].values())
        if not (isinstance(spec["vocabulary"], list) and "size_divisibility" in spec):
            return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    return [SPEC_FILE] + [f for f in listed if f in ("model.ts", "model.onnx")]


def sync_bn_to_bn(module: nn.Module) -> nn.Module:
    """SyncBatchNorm is plain BatchNorm in eval mode; tracers and exporters only know the latter."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            bn.load_state_dict(child.state_dict())
            bn.eval()
            setattr(module, name, bn)
        else:
            sync_bn_to_bn(child)
    return module


def example_input(
    input_dtype: str, batch: int, height: int, width: int, seed: int = 0
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8)
    return x if input_dtype == "uint8" else x.float()


def check_no_clip(names_and_sizes: dict[str, int], student_numel: int, what: str) -> None:
    """The artefact holds the student and the text-embedding constant only."""
    unexpected = [
        n
        for n in names_and_sizes
        if not n.startswith(ALLOWED_PREFIXES) and not n.startswith(("val_", "onnx::", "_"))
    ]
    if unexpected:
        raise AssertionError(f"{what} holds tensors that are not the student's: {unexpected[:5]}")
    total = sum(names_and_sizes.values())
    if total > student_numel * 1.01 + 1024:
        raise AssertionError(
            f"{what} holds {total} weight values, more than the student's {student_numel}: "
            f"something else (CLIP?) was exported."
        )


def export_torchscript(segmenter, example: torch.Tensor, path: str):
    # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++ and
    # mobile deployments load; silence the per-call deprecation and tracer notes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(segmenter, example, check_trace=False)
        with atomic_write_path(path) as tmp:
            torch.jit.save(traced, tmp)
        return torch.jit.load(path)  # safe-load: the file this function has just written


def export_onnx(segmenter, example: torch.Tensor, path: str, options: ExportOptions) -> None:
    outputs = options.output_names
    kwargs = {"input_names": ["image"], "output_names": outputs}
    if options.opset:
        kwargs["opset_version"] = options.opset
    with atomic_write_path(path) as tmp:
        if options.onnx_exporter == "dynamo":
            dynamic = None
            if options.dynamic:
                dims = [torch.export.Dim(n, min=1) for n in ("batch", "height", "width")]
                dynamic = ({0: dims[0], 2: dims[1], 3: dims[2]},)
            # one self-contained file (< 2 GB): external data would be named after the temp file
            torch.onnx.export(
                segmenter,
                (example,),
                tmp,
                dynamo=True,
                dynamic_shapes=dynamic,
                external_data=False,
                **kwargs,
            )
        else:
            axes = None
            if options.dynamic:
                spatial = {0: "batch", 2: "height", 3: "width"}
                out_axes = (
                    spatial
                    if options.output_kind == "logits"
                    else {0: "batch", 1: "height", 2: "width"}
                )
                axes = {"image": spatial, **{o: out_axes for o in outputs}}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    segmenter, (example,), tmp, dynamo=False, dynamic_axes=axes, **kwargs
                )


def reference_outputs(model, segmenter, image: torch.Tensor):
    """What the PyTorch model gives through its own inference path (CLIPZSS.forward)."""
    with torch.no_grad():
        batch = [{"image": img.float()} for img in image]
        logits = torch.stack([out["sem_seg"] for out in model(batch)])
    if segmenter.output == "logits":
        return (logits,)
    scores, labels = logits.softmax(dim=1).max(dim=1)
    return labels, scores


def compare(name: str, got, expected, atol: float = 1e-3) -> list[str]:
    """Problems found; labels may differ only where the top two classes are (near) tied."""
    problems = []
    for i, (g, e) in enumerate(zip(got, expected)):
        g = torch.as_tensor(np.asarray(g))
        if g.shape != e.shape:
            problems.append(f"{name} output {i}: shape {tuple(g.shape)} != {tuple(e.shape)}")
        elif e.dtype == torch.int64:
            mismatch = (g != e).float().mean().item()
            if mismatch > 1e-3:
                problems.append(f"{name} labels differ on {100 * mismatch:.3f}% of pixels")
        else:
            diff = (g.float() - e.float()).abs().max().item()
            logger.info("%s output %d: max |difference| to PyTorch %.2e", name, i, diff)
            if diff > atol:
                problems.append(f"{name} output {i}: max difference {diff:.2e} > {atol}")
    return problems


def student_numel(model, vocabulary: Sequence[str]) -> int:
    """What the artefact may hold: the student's weights, the K x C text constant, the logit
    scale and the normalisation constants, counted from the model, not from the wrapper."""
    numel = sum(
        t.numel()
        for part in (model.backbone, model.embedding_head)
        for t in part.state_dict().values()
    )
    return numel + model.text_embeddings(vocabulary).numel() + 1 + 6


def export_student(
    cfg,
    vocabulary: Sequence[str],
    output_dir: str,
    options: ExportOptions | None = None,
    config_file: str | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Export, check and describe (export.json) the student of `cfg` for `vocabulary`.

    Returns the written artefacts ({format: path}) and the problems found comparing them with
    PyTorch (empty when they match). Raises AssertionError if an artefact holds anything but
    the student (check_no_clip).
    """
    refuse_clip_alone(cfg, "there is nothing to export: export a trained student.")
    options = options or ExportOptions()
    vocabulary = list(vocabulary)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # exported on the CPU; the artefacts run anywhere
    predictor = OpenVocabularyPredictor(cfg, vocabulary, config_name=config_file)
    # NCHW weights, as the model is built: the predictor's NHWC weights (a CPU speed-up of eager
    # PyTorch) make the legacy ONNX exporter fix the batch axis of a dynamic export to 1
    model = sync_bn_to_bn(predictor.model).eval().to(memory_format=torch.contiguous_format)
    model.set_vocabulary(vocabulary)
    if not model.test_time.is_plain:
        logger.warning(
            "MODEL.CLIPZSS.INFERENCE asks for %s; the export runs whole-image inference only.",
            model.test_time,
        )
        model.test_time = TestTimeInference()
    segmenter = FixedVocabularySegmenter(model, vocabulary, output=options.output_kind).eval()
    allowed_numel = student_numel(model, vocabulary)

    os.makedirs(output_dir, exist_ok=True)
    example = example_input(options.input_dtype, 1, options.height, options.width)
    checks = [example]
    if options.dynamic:  # another batch size and an odd size the example never showed
        h, w = options.height // 2 + 7, options.width // 2 + 13
        checks.append(example_input(options.input_dtype, 2, h, w, seed=1))
    expected = [reference_outputs(model, segmenter, x) for x in checks]

    problems, written, opset = [], {}, None
    if "torchscript" in options.formats:
        path = os.path.join(output_dir, "model.ts")
        loaded = export_torchscript(segmenter, example, path)
        check_no_clip({k: v.numel() for k, v in loaded.state_dict().items()}, allowed_numel, path)
        for x, e in zip(checks, expected):
            with torch.no_grad():
                got = loaded(x)
            problems += compare("TorchScript", got if isinstance(got, tuple) else (got,), e)
        written["torchscript"] = path
    if "onnx" in options.formats:
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        path = os.path.join(output_dir, "model.onnx")
        export_onnx(segmenter, example, path, options)
        graph = onnx.load(path).graph
        sizes = {t.name: numpy_helper.to_array(t).size for t in graph.initializer}
        check_no_clip(sizes, allowed_numel, path)
        opset = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        for x, e in zip(checks, expected):
            problems += compare("ONNX", session.run(None, {"image": x.numpy()}), e)
        written["onnx"] = path

    spec = {
        "vocabulary": vocabulary,
        "class_names": [display_name(v) for v in vocabulary],
        "input": {
            "name": "image",
            "shape": ["batch", 3, "height", "width"]
            if options.dynamic
            else [1, 3, options.height, options.width],
            "dtype": options.input_dtype,
            "channels": cfg.INPUT.FORMAT,
            "range": "0..255, not normalised, not resized",
        },
        "output": options.output_names,
        "onnx_exporter": options.onnx_exporter if "onnx" in options.formats else None,
        "onnx_opset": opset,
        "size_divisibility": segmenter.size_divisibility,
        "config_file": config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "files": {k: os.path.basename(v) for k, v in written.items()},
    }
    spec_path = os.path.join(output_dir, SPEC_FILE)
    with atomic_write_path(spec_path) as tmp:
        Path(tmp).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return written, problems
