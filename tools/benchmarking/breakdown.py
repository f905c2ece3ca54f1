"""Where `OpenVocabularyPredictor`'s time goes, stage by stage, against the machine's floor.

`staged_predict` runs what ``decode + predictor.predict_batch`` runs for the plain inference
mode (whole image, no flip, one scale), through the same functions (ResizeShortestEdge's
transform, ``preprocess_images``, ``pad_to_divisible``, the model's ``backbone``,
``embedding_head`` and ``classify``, the label routes of ``TestTimeInference.labels_and_scores``:
row bands of the upsampling, or the chunked upsample / max / softmax denominator) with a timer
around each stage, and returns the same results: the section checks
that its labels equal the predictor's, so the breakdown cannot drift from the code it measures.

`inference_floor` is tools/benchmark.py's section: for each batch size, the student's FLOPs,
the machine's throughput (floor.py), the floor, the predictor's end-to-end time and the stages,
timed round-robin; then, if asked, the exported ONNX model under onnxruntime against PyTorch
eager on the same images.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from clipzss_d2.dense_labels import (
    labels_and_scores,
    resized_labels_and_scores,
    upsampled_labels_and_scores,
)
from clipzss_d2.modeling.inference import autocast, pad_to_divisible, stride_logits
from clipzss_d2.predictor import SegmentationResult, _as_uint8_image, _to_result

from . import floor
from .measure import round_robin, sync

STAGES = (
    "decode",
    "resize",
    "normalise",
    "backbone",
    "head",
    "text classifier",
    "upsampling",
    "argmax",
    "post-processing",
)


class StageTimer:
    """Accumulates wall time per stage (a stage may be entered several times per call)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}")
        sync(self.device)
        start = time.perf_counter()
        yield
        sync(self.device)
        self.totals[stage] += time.perf_counter() - start


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return buf.tobytes()


def decode(jpegs: list[bytes]) -> list[np.ndarray]:
    import cv2

    return [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in jpegs]


def staged_predict(
    predictor, jpegs: list[bytes], vocabulary: list[str], timer: StageTimer
) -> list[SegmentationResult]:
    """decode + ``predictor.predict_batch(images, vocabulary)`` (BGR, one batch of equal-sized
    images, plain inference mode, as many images per forward pass), stage by stage under
    `timer`."""
    model = predictor.model
    mode = model.test_time
    if not mode.is_plain:
        raise ValueError(f"the breakdown times the plain inference mode, not {mode}")
    with torch.no_grad():
        with timer("decode"):
            images = decode(jpegs)
        with timer("resize"):  # predictor._prepare up to the tensor
            sizes, resized = [], []
            for image in images:
                image = _as_uint8_image(image)
                if predictor.model_format != "BGR":
                    image = image[:, :, ::-1]
                sizes.append(image.shape[:2])
                if predictor.aug is not None:
                    image = predictor.aug.get_transform(image).apply_image(image)
                resized.append(image)
        with timer("normalise"):  # the rest of _prepare, preprocess_images, dense_logits' pad
            tensors = [
                torch.as_tensor(np.ascontiguousarray(im.transpose(2, 0, 1))).float()
                for im in resized
            ]
            if len({tuple(t.shape) for t in tensors}) != 1:
                raise ValueError("the breakdown takes images of one (resized) size")
            batch = model.preprocess_images([{"image": t} for t in tensors])
            x = pad_to_divisible(batch.tensor, model.size_divisibility)
            if mode.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        text = model.text_embeddings(vocabulary)
        padded = tuple(x.shape[-2:])
        results = []
        for part in predictor._forward_passes(len(x)):  # as predict_batch
            with autocast(x.device, mode.precision):
                with timer("backbone"):
                    features = model.backbone(x[part])
                with timer("head"):
                    embeddings = F.normalize(model.embedding_head(features), dim=1)
                with timer("text classifier"):
                    logits = model.classify(embeddings, text)
            with timer("upsampling"):  # stride_logits' end: fp32, NHWC
                logits = logits.float()
                if mode.channels_last:
                    logits = logits.contiguous(memory_format=torch.channels_last)
            results += [
                _staged_labels(logits[i : i + 1], padded, tuple(image_size), out, vocabulary, timer)
                for i, (image_size, out) in enumerate(zip(batch.image_sizes[part], sizes[part]))
            ]
        return results


def _staged_labels(logits, padded, size, out, entries, timer):
    """TestTimeInference.labels_and_scores (plain mode) for one image (1 x K x h x w logits, a
    slice of the batch), through the same dense_labels routes with the timer as their stage
    hook: the upsampling's row bands when no resize is left, else the full upsampling and the
    chunked resize."""
    if out == size:
        labels, scores = upsampled_labels_and_scores(logits[0], padded, size, stage=timer)
    else:
        with timer("upsampling"):  # dense_logits for this image (a 4-d slice keeps NHWC)
            full = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
            full = full[0, :, : size[0], : size[1]]
        labels, scores = resized_labels_and_scores(full, out, stage=timer)
    with timer("post-processing"):
        return SegmentationResult(
            labels=labels.cpu().numpy(), scores=scores.cpu().numpy(), vocabulary=list(entries)
        )


# -- the section ------------------------------------------------------------------------------
def benchmark_images(size: int, batch: int, seed: int = 0) -> list[bytes]:
    """`batch` JPEGs (quality 90) of random size x size BGR images."""
    rng = np.random.default_rng(seed)
    return [
        encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(batch)
    ]


def network_input(predictor, jpegs: list[bytes]) -> torch.Tensor:
    """The normalised, padded batch the network sees (what the FLOPs are counted on)."""
    timer = StageTimer()
    model = predictor.model
    images = [predictor._prepare(im, "BGR")["image"] for im in decode(jpegs)]
    with timer("normalise"):
        batch = model.preprocess_images([{"image": t} for t in images])
    return pad_to_divisible(batch.tensor, model.size_divisibility)


def stage_times(predictor, jpegs, vocabulary, device, warmup: int, iters: int, probes=()):
    """End-to-end (decode + predict_batch) and staged calls timed round-robin, with one call of
    each throughput probe (floor.Throughput) per round, so that all see the same load: the
    end-to-end median, the staged median, the stage medians, and whether the staged labels
    equal the predictor's."""
    per_call: list[dict[str, float]] = []

    def staged():
        timer = StageTimer(device)
        out = staged_predict(predictor, jpegs, vocabulary, timer)
        per_call.append(dict(timer.totals))
        return out

    def end_to_end():
        return predictor.predict_batch(decode(jpegs), vocabulary)

    fns = {"end to end": end_to_end, "staged": staged}
    fns.update({f"probe {i}": p.fn for i, p in enumerate(probes)})
    with torch.inference_mode():
        timings = round_robin(fns, device, warmup, iters)
    for i, p in enumerate(probes):
        p.times += timings[f"probe {i}"].times
    per_call = per_call[warmup:]
    stages = {s: float(np.median([c.get(s, 0.0) for c in per_call])) for s in STAGES}
    same = all(np.array_equal(a.labels, b.labels) for a, b in zip(staged(), end_to_end()))
    return timings["end to end"].median, timings["staged"].median, stages, same


# the routes from the model's logits at its output stride to labels and scores, in the order the
# predictor took them: chunks of classes with a running max and softmax denominator on the
# full-size planes (until 2026-12-06), row bands of the full-size planes (2026-12-06), row bands
# of the upsampling itself (clipzss_d2.dense_labels.upsampled_labels_and_scores, since 2026-12-07)
POST_ROUTES = ("class chunks", "row bands", "upsampled row bands")


def postprocess_alternatives(predictor, jpegs, vocabulary, device, warmup: int, iters: int):
    """The routes of POST_ROUTES on the model's own logits for the first image (plain mode, no
    resize left), round-robin, each from the logits at the output stride (upsampling included):
    ({route: ms}, labels identical across the routes), or None when a resize is left."""
    x = predictor._prepare(decode(jpegs[:1])[0], "BGR")
    model, mode = predictor.model, predictor.model.test_time
    text = model.text_embeddings(vocabulary)
    with torch.inference_mode():
        batch = model.preprocess_images([x])
        size = tuple(batch.image_sizes[0])
        if size != (x["height"], x["width"]) or not mode.is_plain:
            return None
        logits, padded = stride_logits(
            lambda t: model.dense_class_logits(t, text), batch.tensor, model.size_divisibility,
            **mode.dense_kwargs,
        )  # fmt: skip
        batch, logits = logits, logits[0]

        def full():  # dense_logits' resize, of the NHWC batch as there
            up = F.interpolate(batch, size=padded, mode="bilinear", align_corners=False)
            return up[0, :, : size[0], : size[1]]

        routes = {
            "class chunks": lambda: resized_labels_and_scores(full(), size),
            "row bands": lambda: labels_and_scores(full()),
            "upsampled row bands": lambda: upsampled_labels_and_scores(logits, padded, size),
        }
        timings = round_robin(routes, device, warmup, iters)
        labels = [fn()[0] for fn in routes.values()]
    same = all(torch.equal(labels[0], other) for other in labels[1:])
    return {name: timings[name].median * 1000 for name in routes}, same


def predictor_alternatives(predictor, jpegs, vocabulary, device, warmup: int, iters: int):
    """The predictor against its routes before 2026-12-08, round-robin on the same images:
    convolution weights NCHW (with CHANNELS_LAST the predictor holds them NHWC) and the batch
    in one forward pass (INFERENCE.IMAGES_PER_FORWARD = the batch). {variant: (ms, % of pixels
    whose label differs from the predictor's)}: another layout or batch size rounds the logits
    differently, which can only flip a pixel whose top two classes tie to float rounding."""
    variants = {"predictor": predictor}
    if predictor.model.test_time.channels_last:
        nchw = copy.copy(predictor)
        nchw.model = copy.deepcopy(predictor.model).to(memory_format=torch.contiguous_format)
        variants["NCHW weights"] = nchw
    if len(jpegs) > 1:
        for name, base in list(variants.items()):
            one_pass = copy.copy(base)
            one_pass.images_per_forward = len(jpegs)
            variants[f"{name}, one forward pass"] = one_pass
    images = decode(jpegs)
    fns = {name: (lambda p=p: p.predict_batch(images, vocabulary)) for name, p in variants.items()}
    with torch.inference_mode():
        timings = round_robin(fns, device, warmup, iters)
        labels = {name: np.stack([r.labels for r in fn()]) for name, fn in fns.items()}
    return {
        name: (
            timings[name].median * 1000,
            100 * float(np.mean(labels[name] != labels["predictor"])),
        )
        for name in fns
    }


def inference_floor(args, predictors: dict, configs: list[str], onnx: bool) -> dict:
    """The floor section of tools/benchmark.py for `configs` (fp32)."""
    from .sections import student_name

    threads = torch.get_num_threads()
    probes = floor.probe_throughput(repeats=max(3, args.iters * 2))
    rows, onnx_rows = [], []
    for config in configs:
        predictor = predictors[config]
        model = predictor.model
        model.test_time.precision = "fp32"
        vocabulary = predictor.vocabulary
        text = model.text_embeddings(vocabulary)
        for bs in args.batch_sizes:
            jpegs = benchmark_images(args.size, bs)
            count = floor.student_flops(model, network_input(predictor, jpegs), text)
            total, staged_total, stages, same = stage_times(
                predictor, jpegs, vocabulary, args.device, args.warmup, args.iters, probes
            )
            rows.append(
                {
                    "student": student_name(config),
                    "batch": bs,
                    "gflops": count.flops / 1e9,
                    "operators": floor.operator_summary(count),
                    "total_ms": total * 1000,
                    "predictor_ms": (total - stages["decode"]) * 1000,
                    "staged_ms": staged_total * 1000,
                    "stages_ms": {k: v * 1000 for k, v in stages.items()},
                    "labels_equal": same,
                    "alternatives": predictor_alternatives(
                        predictor, jpegs, vocabulary, args.device, args.warmup, args.iters
                    ),
                }
            )
            print(
                f"  predictor batch {bs}, round-robin: "
                + ", ".join(
                    f"{name} {ms:.0f} ms ({share:.4f} % labels differ)"
                    for name, (ms, share) in rows[-1]["alternatives"].items()
                ),
                flush=True,
            )
        post = postprocess_alternatives(
            predictor, benchmark_images(args.size, 1), vocabulary, args.device, args.warmup,
            args.iters,
        )  # fmt: skip
        if post:
            rows[-1]["post_alternative"] = post
            print(
                "  upsampling + post-processing of one image: "
                + ", ".join(f"{name} {ms:.0f} ms" for name, ms in post[0].items())
                + " (the predictor's route: the last), labels "
                + ("identical" if post[1] else "DIFFER"),
                flush=True,
            )
        if onnx:
            onnx_rows += onnx_against_eager(args, predictor, config)
    for p in probes:
        print(
            f"  throughput {p.name}: {p.best_gflops:.1f} GFLOP/s best, "
            f"{p.median_gflops:.1f} median ({threads} threads, {len(p.times)} calls)",
            flush=True,
        )
    for row in rows:  # the floor from every probe call of the section
        row["floor_ms"] = floor.floor_seconds(row["gflops"] * 1e9, probes) * 1000
        row["multiple"] = row["predictor_ms"] / row["floor_ms"]
        print(
            f"  floor {row['student']} batch {row['batch']}: {row['gflops']:.1f} GFLOP "
            f"({row['operators']}), floor {row['floor_ms']:.0f} ms, predictor "
            f"{row['predictor_ms']:.0f} ms = {row['multiple']:.2f}x the floor; stages sum "
            f"{sum(row['stages_ms'].values()):.0f} ms, staged run {row['staged_ms']:.0f} ms, "
            f"decode + predictor {row['total_ms']:.0f} ms"
            + ("" if row["labels_equal"] else "  (staged labels DIFFER from the predictor's)"),
            flush=True,
        )
    return {"probes": probes, "threads": threads, "rows": rows, "onnx": onnx_rows}


class OnnxRunner:
    """An exported model (clipzss_d2.export) under onnxruntime (CPU EP) with the predictor's
    contract: BGR uint8 H x W x 3 arrays of one size in, SegmentationResults out. Images are
    resized as the predictor resizes them; a "labels" graph answers at the resized size and is
    brought to the input size by nearest neighbour (what a user of that export has to do), a
    "logits" graph's logits go through the predictor's own ``_to_result`` (to the input size)."""

    def __init__(self, path: str, predictor, vocabulary: list[str], output: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.predictor, self.vocabulary, self.output = predictor, vocabulary, output

    def __call__(self, images: list[np.ndarray]) -> list[SegmentationResult]:
        p = self.predictor
        batch, sizes = [], []
        for image in images:
            image = image if p.model_format == "BGR" else image[:, :, ::-1]
            sizes.append(image.shape[:2])
            if p.aug is not None:
                image = p.aug.get_transform(image).apply_image(image)
            batch.append(image.transpose(2, 0, 1))
        outputs = self.session.run(None, {"image": np.ascontiguousarray(np.stack(batch))})
        if self.output == "labels":
            return [
                SegmentationResult(*to_size(labels, scores, size), list(self.vocabulary))
                for labels, scores, size in zip(*outputs, sizes)
            ]
        logits = torch.from_numpy(outputs[0])
        return [_to_result(lg, self.vocabulary, size) for lg, size in zip(logits, sizes)]


def to_size(labels: np.ndarray, scores: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """A labels graph's labels and scores (at the resized size) at the input size."""
    if tuple(labels.shape) == tuple(size):
        return labels, scores
    stacked = torch.from_numpy(np.stack([labels.astype(np.float32), scores.astype(np.float32)]))
    resized = F.interpolate(stacked[None], size=tuple(size), mode="nearest-exact")[0].numpy()
    return resized[0].astype(labels.dtype), resized[1].astype(scores.dtype)


def export_fixed_batch(predictor, vocabulary, path: str, output: str, batch: int, size):
    """clipzss_d2.export's segmenter and ONNX export (the default exporter) at a fixed batch:
    a dynamic batch axis does not survive the export of every student (SegFormer-B0's graph
    comes out fixed to the example's batch of 1)."""
    from clipzss_d2.export import (
        ExportOptions,
        FixedVocabularySegmenter,
        example_input,
        export_onnx,
        sync_bn_to_bn,
    )

    model = sync_bn_to_bn(predictor.model).eval()
    segmenter = FixedVocabularySegmenter(model, vocabulary, output=output).eval()
    height, width = size  # the network's input: the predictor's resized image
    options = ExportOptions(formats=("onnx",), height=height, width=width, output_kind=output)
    with torch.no_grad():
        export_onnx(segmenter, example_input("uint8", batch, height, width), path, options)


ONNX_OUTPUTS = ("labels", "logits")


def onnx_against_eager(args, predictor, config: str) -> list[dict]:
    """Export (clipzss_d2.export; labels + scores out, as export_model.py writes by default, and
    logits out + the predictor's post-processing) to a temporary folder; time onnxruntime (CPU,
    torch's thread count) against the PyTorch predictor on the same images, round-robin."""
    import os

    from .sections import student_name

    rows = []
    vocabulary = predictor.vocabulary
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        for bs in args.batch_sizes:
            images = decode(benchmark_images(args.size, bs))
            resized = tuple(predictor._prepare(images[0], "BGR")["image"].shape[-2:])
            fns = {"eager": lambda im=images: predictor.predict_batch(im, vocabulary)}
            export_s = {}
            for output in ONNX_OUTPUTS:
                path = os.path.join(folder, f"{output}-{bs}.onnx")
                start = time.perf_counter()
                export_fixed_batch(predictor, vocabulary, path, output, bs, resized)
                export_s[output] = time.perf_counter() - start
                fns[output] = OnnxRunner(path, predictor, vocabulary, output, threads)
            timings = round_robin(
                {k: (lambda f=f, im=images: f(im)) for k, f in fns.items()},
                args.device,
                args.warmup,
                args.iters,
            )
            eager = predictor.predict_batch(images, vocabulary)
            pixels = sum(a.labels.size for a in eager)
            for output in ONNX_OUTPUTS:
                got = fns[output](images)
                differ = sum(int((a.labels != b.labels).sum()) for a, b in zip(eager, got))
                row = {
                    "student": student_name(config),
                    "batch": bs,
                    "graph": output,
                    "eager_ms": timings["eager"].median * 1000,
                    "onnx_ms": timings[output].median * 1000,
                    "ratio": timings["eager"].median / timings[output].median,
                    "label_mismatch": differ / pixels,
                    "export_s": export_s[output],
                }
                rows.append(row)
                print(
                    f"  onnx {row['student']} batch {bs}, {output} graph: eager "
                    f"{row['eager_ms']:.0f} ms, onnxruntime {row['onnx_ms']:.0f} ms (eager / "
                    f"onnxruntime {row['ratio']:.2f}x), labels differ on "
                    f"{100 * row['label_mismatch']:.4f}% of pixels",
                    flush=True,
                )
    return rows


def three_digits(ms: float) -> str:
    """A time with three significant digits (never in exponent form), so that a ratio of two
    printed times is the printed ratio even for a tiny model's sub-millisecond floor."""
    if ms <= 0 or not math.isfinite(ms):
        return f"{ms:.1f}"
    return f"{ms:.{max(0, 2 - math.floor(math.log10(ms)))}f}"


def floor_markdown(args, floor_out: dict) -> list[str]:
    """The floor section's tables."""
    if not floor_out or not floor_out["rows"]:
        return []
    probes, rows = floor_out["probes"], floor_out["rows"]
    best = max(probes, key=lambda p: p.best_gflops)
    out = [
        f"### Inference against the machine's floor, {args.size}², {args.num_classes} classes, "
        "fp32",
        "",
        f"Throughput probes ({floor_out['threads']} threads, fp32, best / median of all their "
        "calls: alone first, then one per round-robin round with the predictor): "
        + "; ".join(
            f"{p.name}: {p.best_gflops:.1f} / {p.median_gflops:.1f} GFLOP/s" for p in probes
        )
        + f". Floor = the network's FLOPs (fvcore, 1 multiply-add = {floor.FLOPS_PER_MAC} "
        f"FLOPs; convolution, linear, einsum, attention) / {best.best_gflops:.1f} GFLOP/s "
        f"({best.name}, the best probe). Predictor = `predict_batch` on decoded BGR images "
        "(decode excluded); stages from a staged run of the same code (labels checked equal).",
        "",
        "| student | batch | GFLOP | floor ms | predictor ms | **x floor** | "
        + " | ".join(STAGES)
        + " | stage sum | staged run | decode + predictor | labels equal |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---:|---:|---:|---|",
    ]
    for r in rows:
        stages = " | ".join(f"{r['stages_ms'][s]:.1f}" for s in STAGES)
        out.append(
            f"| {r['student']} | {r['batch']} | {r['gflops']:.2f} | {three_digits(r['floor_ms'])} | "
            f"{three_digits(r['predictor_ms'])} | **{r['multiple']:.2f}x** | {stages} | "
            f"{sum(r['stages_ms'].values()):.1f} | {r['staged_ms']:.1f} | {r['total_ms']:.1f} | "
            f"{'yes' if r['labels_equal'] else 'NO'} |"
        )
    out += ["", "GFLOP by operator: " + "; ".join(
        f"{r['student']} batch {r['batch']}: {r['operators']}" for r in rows
    ), ""]  # fmt: skip
    for r in rows:
        if len(r.get("alternatives", {})) > 1:
            out += [
                f"The predictor against its routes before 2026-12-08 ({r['student']}, batch "
                f"{r['batch']}, round-robin; ms, and the % of pixels whose label differs from "
                "the predictor's): "
                + ", ".join(
                    f"{name} {ms:.0f} ({share:.4f} %)"
                    for name, (ms, share) in r["alternatives"].items()
                )
                + ".",
                "",
            ]
        if "post_alternative" in r:
            times, same = r["post_alternative"]
            out += [
                f"Upsampling + post-processing of one image ({r['student']}; from the model's "
                f"logits at its output stride to labels and top-class softmax at {args.size}²): "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in times.items())
                + " (`clipzss_d2.dense_labels`; the predictor's route is the last), labels "
                + ("identical." if same else "DIFFERENT."),
                "",
            ]
    if floor_out["onnx"]:
        out += [
            "#### Exported ONNX model (onnxruntime, CPU EP) against PyTorch eager",
            "",
            "`labels` graph: what `tools/export_model.py` writes by default (softmax and max "
            "over the classes inside the graph); `logits` graph: the exported network and "
            "upsampling, then the predictor's own `_to_result`. Both at a fixed batch.",
            "",
            "| student | batch | graph | PyTorch predictor ms | onnxruntime ms | "
            "eager / onnxruntime | labels differ (% pixels) | export s |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in floor_out["onnx"]:
            out.append(
                f"| {r['student']} | {r['batch']} | {r['graph']} | {three_digits(r['eager_ms'])} | "
                f"{three_digits(r['onnx_ms'])} | "
                f"{r['ratio']:.2f}x | {100 * r['label_mismatch']:.4f} | {r['export_s']:.0f} |"
            )
        out.append("")
    return out
