#!/usr/bin/env python
"""Export the trained student with a fixed vocabulary to TorchScript and ONNX.

    python tools/export_model.py --config-file configs/coco_stuff.yaml \\
        --vocab-dataset coco_stuff171_zs_val --output exported/ --dynamic \\
        --opts MODEL.WEIGHTS output/coco_stuff/model_final.pth
    python tools/export_model.py --model-folder output/coco_stuff/model \\
        --vocab-dataset coco_stuff171_zs_val --output exported/ --dynamic

The artefact is backbone + embedding head + the vocabulary's CLIP text embeddings as a constant
(K x C buffer) + the logit scale: no CLIP module or weight is inside (checked after export).

Input: `image`, N x 3 x H x W, uint8 (default) or float32 with 0..255 values, channels in the
config's INPUT.FORMAT order (RGB for this project's configs). The model normalises and pads to
its size divisibility itself; it does not resize, so resize like the predictor does
(shortest edge to INPUT.MIN_SIZE_TEST) before calling it. With --dynamic, N, H and W are dynamic
axes; otherwise the ONNX graph is fixed to 1 x 3 x HEIGHT x WIDTH.
Output (--output-kind): `logits` N x K x H x W, or `labels` (N x H x W int64) and `scores`
(N x H x W float32, softmax probability of the predicted class).

ONNX uses torch.onnx.export with the torch.export-based exporter (dynamo=True, the default of
current PyTorch) unless --onnx-exporter legacy is given; TorchScript uses torch.jit.trace.
Whole-image inference only: sliding-window and test-time augmentation are not exported.
Every export is checked against the PyTorch model (CLIPZSS.inference) on random inputs (at a
second size too when --dynamic); the tool exits 1 if outputs differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from torch import nn  # noqa: E402

from clipzss_d2 import get_clipzss_cfg  # noqa: E402
from clipzss_d2.errors import USER_ERRORS  # noqa: E402
from clipzss_d2.model_folder import CONFIG_FILE, load_folder_config  # noqa: E402
from clipzss_d2.modeling.inference import FixedVocabularySegmenter, TestTimeInference  # noqa: E402
from clipzss_d2.predictor import (  # noqa: E402
    OpenVocabularyPredictor,
    dataset_vocabulary,
    read_vocabulary_file,
)
from clipzss_d2.utils.config_loading import merge_config  # noqa: E402
from clipzss_d2.utils.io import atomic_write_path  # noqa: E402
from clipzss_d2.vocabulary import display_name, parse_vocabulary  # noqa: E402

logger = logging.getLogger("clipzss_d2.export")

# Everything an exported model may contain; anything else (e.g. CLIP's token_embedding,
# transformer or visual weights) fails the check.
ALLOWED_PREFIXES = (
    "backbone.",
    "embedding_head.",
    "text_embeddings",
    "logit_scale",
    "pixel_mean",
    "pixel_std",
)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a CLIP-ZSS student with a fixed vocabulary")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE")
    model.add_argument(
        "--model-folder", metavar="DIR", help="a model folder (OUTPUT_DIR/model of train_net.py)"
    )
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", help='comma-separated classes, "|" joins synonyms')
    vocab.add_argument("--vocab-file", help="text file with one class per line")
    vocab.add_argument("--vocab-dataset", help="the classes of a registered dataset")
    p.add_argument("--output", required=True, help="folder for model.ts / model.onnx / JSON")
    p.add_argument(
        "--format", nargs="+", choices=["torchscript", "onnx"], default=["torchscript", "onnx"]
    )
    p.add_argument("--height", type=int, default=512, help="example (or fixed) input height")
    p.add_argument("--width", type=int, default=512, help="example (or fixed) input width")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--input-dtype", choices=["uint8", "float32"], default="uint8")
    p.add_argument("--output-kind", choices=["logits", "labels"], default="labels")
    p.add_argument("--onnx-exporter", choices=["dynamo", "legacy"], default="dynamo")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: exporter's)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="config overrides")
    return p


def vocabulary_from_args(args) -> list[str]:
    if args.vocab is not None:
        return parse_vocabulary(args.vocab)
    if args.vocab_file is not None:
        return read_vocabulary_file(args.vocab_file)
    return dataset_vocabulary(args.vocab_dataset).entries


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


def example_input(args, batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8)
    return x if args.input_dtype == "uint8" else x.float()


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
        return torch.jit.load(path)


def export_onnx(segmenter, example: torch.Tensor, path: str, args) -> None:
    outputs = ["logits"] if args.output_kind == "logits" else ["labels", "scores"]
    kwargs = {"input_names": ["image"], "output_names": outputs}
    if args.opset:
        kwargs["opset_version"] = args.opset
    with atomic_write_path(path) as tmp:
        if args.onnx_exporter == "dynamo":
            dynamic = None
            if args.dynamic:
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
            if args.dynamic:
                spatial = {0: "batch", 2: "height", 3: "width"}
                out_axes = (
                    spatial
                    if args.output_kind == "logits"
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


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except USER_ERRORS as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    vocabulary = vocabulary_from_args(args)
    if args.model_folder:
        cfg = load_folder_config(args.model_folder, args.opts, "--opts")
        config_file = os.path.join(args.model_folder, CONFIG_FILE)
    else:
        cfg = merge_config(get_clipzss_cfg(), args.config_file, args.opts, "--opts")
        config_file = args.config_file
    cfg.MODEL.DEVICE = "cpu"  # exported on the CPU; the artefacts run anywhere
    predictor = OpenVocabularyPredictor(cfg, vocabulary, config_name=config_file)
    model = sync_bn_to_bn(predictor.model).eval()
    model.set_vocabulary(vocabulary)
    if not model.test_time.is_plain:
        logger.warning(
            "MODEL.CLIPZSS.INFERENCE asks for %s; the export runs whole-image inference only.",
            model.test_time,
        )
        model.test_time = TestTimeInference()
    segmenter = FixedVocabularySegmenter(model, vocabulary, output=args.output_kind).eval()
    # What the artefact may hold: the student's weights, the K x C text constant, the logit
    # scale and the normalisation constants, counted from the model, not from the wrapper.
    student_numel = sum(
        t.numel()
        for part in (model.backbone, model.embedding_head)
        for t in part.state_dict().values()
    )
    student_numel += model.text_embeddings(vocabulary).numel() + 1 + 6

    os.makedirs(args.output, exist_ok=True)
    example = example_input(args, 1, args.height, args.width)
    checks = [example]
    if args.dynamic:  # another batch size and an odd size the example never showed
        checks.append(example_input(args, 2, args.height // 2 + 7, args.width // 2 + 13, seed=1))
    expected = [reference_outputs(model, segmenter, x) for x in checks]

    problems, written, opset = [], {}, None
    if "torchscript" in args.format:
        path = os.path.join(args.output, "model.ts")
        loaded = export_torchscript(segmenter, example, path)
        check_no_clip({k: v.numel() for k, v in loaded.state_dict().items()}, student_numel, path)
        for x, e in zip(checks, expected):
            with torch.no_grad():
                got = loaded(x)
            problems += compare("TorchScript", got if isinstance(got, tuple) else (got,), e)
        written["torchscript"] = path
    if "onnx" in args.format:
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper

        path = os.path.join(args.output, "model.onnx")
        export_onnx(segmenter, example, path, args)
        graph = onnx.load(path).graph
        sizes = {t.name: numpy_helper.to_array(t).size for t in graph.initializer}
        check_no_clip(sizes, student_numel, path)
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
            if args.dynamic
            else [1, 3, args.height, args.width],
            "dtype": args.input_dtype,
            "channels": cfg.INPUT.FORMAT,
            "range": "0..255, not normalised, not resized",
        },
        "output": ["logits"] if args.output_kind == "logits" else ["labels", "scores"],
        "onnx_exporter": args.onnx_exporter if "onnx" in args.format else None,
        "onnx_opset": opset,
        "size_divisibility": segmenter.size_divisibility,
        "config_file": config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "files": {k: os.path.basename(v) for k, v in written.items()},
    }
    spec_path = os.path.join(args.output, "export.json")
    with atomic_write_path(spec_path) as tmp:
        Path(tmp).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    if problems:
        print("export_model.py: exported models do not match PyTorch:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"Exported {', '.join(written.values())}: outputs match PyTorch; no CLIP inside.")
    return 0


if __name__ == "__main__":
    for name in ("fvcore", "detectron2", "clipzss_d2"):
        setup_logger(name=name)
    sys.exit(main())
