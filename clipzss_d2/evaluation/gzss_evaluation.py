"""Generalized zero-shot semantic segmentation metrics: mIoU of seen and unseen classes, hIoU.

One confusion matrix over all classes (every pixel is classified over seen + unseen jointly);
the seen/unseen split only decides which classes each mean runs over.

Classes absent from the ground truth. detectron2 changed this (commit f3c1bc19, after v0.6):
v0.6 divides the sum of IoUs of classes present in the ground truth by the number of classes
with ground truth + predictions > 0, i.e. a class that is predicted but absent counts as IoU 0;
later versions average over the classes present in the ground truth only. This evaluator's
primary numbers use the classes present in the ground truth (union over the whole evaluation
set); with `report_both_conventions` it adds the v0.6 means under keys suffixed "[d2v0.6]".
Per-class IoU of an absent class is NaN in both. A group with no class present (e.g. a subset
without unseen pixels) has mIoU NaN, and so has hIoU.

Where the errors cross the split, in %: `seen_as_unseen` (seen ground-truth pixels predicted as
an unseen class), `unseen_as_seen` (the reverse, the classic seen bias) and, per unseen class,
`FromSeen-<name>` (of the pixels predicted as that class, the share whose truth is a seen class:
what a seen look-alike costs that class's IoU). The per-class JSON written with an output
directory holds the whole confusion matrix, to see which look-alike it is.

Datasets without unseen classes (the open-vocabulary `*_ov_*` sets) report no mIoU(seen),
mIoU(unseen) or hIoU keys at all: mIoU is the metric there.
"""

import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils import comm
from tabulate import tabulate

from ..data.label_io import read_label_map
from ..utils.io import atomic_write_text
from ..vocabulary import unseen_class_ids

V06 = "[d2v0.6]"
PER_CLASS_FILE = "gzss_per_class_iou.json"


def harmonic_mean(seen: float, unseen: float) -> float:
    if np.isnan(seen) or np.isnan(unseen):
        return float("nan")
    if seen + unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)


def _mean(values: np.ndarray, count: float) -> float:
    return float(np.sum(values) / count) if count > 0 else float("nan")


def compute_gzss_metrics(
    conf: np.ndarray,
    class_names: list[str],
    unseen_ids: list[int],
    report_both_conventions: bool = False,
) -> tuple[OrderedDict, dict]:
    """Metrics (in %) from an N x N confusion matrix conf[pred, gt] with ignored pixels removed.

    Returns (results, per_class) where per_class holds pixel counts and IoU per class.
    """
    n = len(class_names)
    conf = np.asarray(conf, dtype=np.float64)
    assert conf.shape == (n, n), (conf.shape, n)
    tp = np.diag(conf)
    gt = conf.sum(axis=0)
    pred = conf.sum(axis=1)
    union = gt + pred - tp
    present = gt > 0  # primary convention: classes present in the ground truth
    touched = (gt + pred) > 0  # v0.6 denominator: ground truth or prediction
    iou = np.full(n, np.nan)
    iou[present] = tp[present] / union[present]
    acc = np.full(n, np.nan)
    acc[present] = tp[present] / gt[present]

    unseen = np.zeros(n, dtype=bool)
    unseen[list(unseen_ids)] = True
    groups = {"": np.ones(n, dtype=bool)}
    if unseen.any():
        groups["(seen)"], groups["(unseen)"] = ~unseen, unseen

    res = OrderedDict()
    total = gt.sum()
    for suffix, members in groups.items():
        res[f"mIoU{suffix}"] = 100 * _mean(iou[members & present], np.sum(members & present))
    if unseen.any():
        res["hIoU"] = harmonic_mean(res["mIoU(seen)"], res["mIoU(unseen)"])
    res["pAcc"] = 100 * float(tp.sum() / total) if total > 0 else float("nan")
    res["mAcc"] = 100 * _mean(acc[present], np.sum(present))
    res["fwIoU"] = (
        100 * float(np.sum(iou[present] * gt[present]) / total) if total else float("nan")
    )
    if unseen.any():
        seen_gt, unseen_gt = gt[~unseen].sum(), gt[unseen].sum()
        res["seen_as_unseen"] = 100 * _mean(conf[np.ix_(unseen, ~unseen)].sum(), seen_gt)
        res["unseen_as_seen"] = 100 * _mean(conf[np.ix_(~unseen, unseen)].sum(), unseen_gt)
        for i in np.flatnonzero(unseen):
            res[f"FromSeen-{class_names[i]}"] = 100 * _mean(conf[i, ~unseen].sum(), pred[i])
    if report_both_conventions:
        for suffix, members in groups.items():
            res[f"mIoU{suffix}{V06}"] = 100 * _mean(
                iou[members & present], np.sum(members & touched)
            )
        if unseen.any():
            res[f"hIoU{V06}"] = harmonic_mean(res[f"mIoU(seen){V06}"], res[f"mIoU(unseen){V06}"])
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])

    per_class = {
        "classes": [
            {
                "id": i,
                "name": name,
                "split": "unseen" if unseen[i] else "seen",
                "iou": None if np.isnan(iou[i]) else 100 * float(iou[i]),
                "gt_pixels": int(gt[i]),
                "pred_pixels": int(pred[i]),
                "tp_pixels": int(tp[i]),
            }
            for i, name in enumerate(class_names)
        ]
    }
    return res, per_class


class GZSSSemSegEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator (file lookup, metadata, confusion-matrix layout, distributed
    gathering) with the generalized zero-shot metrics of `compute_gzss_metrics`.

    Differences from the parent: ground truth is read with `read_label_map` (numpy 2 safe),
    predictions and ground truth are checked (class count, size, label values), boundary IoU and
    the RLE predictions json are not computed.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        report_both_conventions: bool = False,
        sem_seg_loading_fn=read_label_map,
        segmenter: str | None = None,
    ):
        """segmenter: what predicts, when it is not a trained student ("CLIP alone (no
        student)"): said in the log and in the per-class file, so that its numbers are never
        taken for a student's."""
        super().__init__(
            dataset_name, distributed, output_dir, sem_seg_loading_fn=sem_seg_loading_fn
        )
        self._logger = logging.getLogger(__name__)
        self._compute_boundary_iou = False
        meta = MetadataCatalog.get(dataset_name)
        self._unseen_ids = unseen_class_ids(meta)
        self._report_both = report_both_conventions
        self._segmenter = segmenter

    def process(self, inputs, outputs):
        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            logits = out["sem_seg"] if isinstance(out, dict) else out
            if logits.ndim != 3 or logits.shape[0] != n:
                raise ValueError(
                    f"{self._dataset_name}: prediction for {inp['file_name']} has shape "
                    f"{tuple(logits.shape)}, expected ({n}, H, W) for the dataset's {n} classes. "
                    f"Evaluate with the dataset's own vocabulary (prompt_names)."
                )
            pred = logits.argmax(dim=0).to(torch.device("cpu")).numpy().astype(np.int64)
            gt_file = self.input_file_to_gt_file[inp["file_name"]]
            gt = np.asarray(self.sem_seg_loading_fn(gt_file, dtype=np.int64))
            if gt.shape != pred.shape:
                raise ValueError(
                    f"{self._dataset_name}: prediction for {inp['file_name']} is "
                    f"{pred.shape[1]}x{pred.shape[0]} but its ground truth {gt_file} is "
                    f"{gt.shape[1]}x{gt.shape[0]}; the model must output the original image size"
                )
            labelled = gt != self._ignore_label
            if labelled.any() and (gt[labelled].min() < 0 or gt[labelled].max() >= n):
                bad = np.unique(gt[labelled & ((gt < 0) | (gt >= n))])[:10].tolist()
                raise ValueError(
                    f"{gt_file} holds label ids {bad} outside 0..{n - 1} and the ignore label "
                    f"{self._ignore_label}"
                )
            index = n * pred[labelled] + gt[labelled]
            self._conf_matrix[:n, :n] += np.bincount(index, minlength=n * n).reshape(n, n)

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            matrices = comm.all_gather(self._conf_matrix)
            if not comm.is_main_process():
                return None
            conf = np.sum(matrices, axis=0)
        else:
            conf = self._conf_matrix
        n = self._num_classes
        res, per_class = compute_gzss_metrics(
            conf[:n, :n], list(self._class_names), self._unseen_ids, self._report_both
        )
        if conf[:n, :n].sum() == 0:
            self._logger.warning(f"{self._dataset_name}: no labelled pixel evaluated; all NaN.")
        if self._segmenter:
            self._logger.warning(
                f"{self._dataset_name}: these results are {self._segmenter}'s, not a trained "
                f"student's."
            )
        self._log_tables(res)
        if self._output_dir:
            per_class.update(
                dataset=self._dataset_name,
                convention="mean over classes present in the ground truth",
                metrics={k: (None if np.isnan(v) else v) for k, v in res.items()},
                # which class is taken for which: rows predicted, columns ground truth, in the
                # order of "classes" (ignored pixels left out)
                confusion=conf[:n, :n].astype(np.int64).tolist(),
            )
            if self._segmenter:
                per_class["segmenter"] = self._segmenter
            os.makedirs(self._output_dir, exist_ok=True)
            atomic_write_text(
                os.path.join(self._output_dir, PER_CLASS_FILE),
                json.dumps(per_class, indent=1, allow_nan=False),
            )
        return OrderedDict({"sem_seg": res})

    def _log_tables(self, res: OrderedDict) -> None:
        n, u = self._num_classes, len(self._unseen_ids)
        rows = []
        if u:
            rows += [
                ["seen", n - u, res["mIoU(seen)"], res.get(f"mIoU(seen){V06}")],
                ["unseen", u, res["mIoU(unseen)"], res.get(f"mIoU(unseen){V06}")],
            ]
        rows.append(["all", n, res["mIoU"], res.get(f"mIoU{V06}")])
        if u:
            rows.append(["hIoU (seen, unseen)", "", res["hIoU"], res.get(f"hIoU{V06}")])
        headers = ["classes", "#", "mIoU (classes in GT)"]
        if self._report_both:
            headers.append("mIoU (d2 v0.6: GT or pred)")
        else:
            rows = [r[:3] for r in rows]
        summary = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".2f")
        unseen = set(self._unseen_ids)
        cells = [
            [name, "unseen" if i in unseen else "seen", res[f"IoU-{name}"]]
            for i, name in enumerate(self._class_names)
        ]
        width = 3
        flat = [cells[i : i + width] for i in range(0, len(cells), width)]
        per_class = tabulate(
            [sum(row, []) for row in flat],
            headers=["class", "split", "IoU"] * width,
            tablefmt="pipe",
            floatfmt=".2f",
        )
        self._logger.info(
            f"Generalized zero-shot evaluation of {self._dataset_name} ({n - u} seen, {u} unseen "
            f"classes; pAcc {res['pAcc']:.2f}, fwIoU {res['fwIoU']:.2f}):\n{summary}\n"
            f"Per-class IoU (NaN = class absent from the ground truth):\n{per_class}"
        )
