"""GZSS evaluator: hand-worked confusion matrices, an independent computation, and a 2-process run."""

import json
import logging
import math
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import launch
from detectron2.evaluation import SemSegEvaluator
from PIL import Image
from sklearn.metrics import confusion_matrix

from clipzss_d2.data import read_label_map
from clipzss_d2.evaluation import GZSSSemSegEvaluator
from clipzss_d2.evaluation.gzss_evaluation import PER_CLASS_FILE
from clipzss_d2.utils.distributed import leave_process_groups

CLASSES = ["a", "b", "c", "d"]
UNSEEN = ["c", "d"]  # ids 2 and 3
I = 255  # noqa: E741  (ignore)
NAN = float("nan")


def register_toy(tmp_path, gts, classes=CLASSES, unseen=UNSEEN) -> tuple[str, list[dict]]:
    """A dataset of the given ground-truth arrays; returns its name and its records."""
    name = f"gzss_toy_{uuid.uuid4().hex[:8]}"
    records = []
    for k, gt in enumerate(gts):
        path = tmp_path / f"{name}_{k}.png"
        Image.fromarray(np.asarray(gt, dtype=np.uint8)).save(path)
        records.append({"file_name": f"img_{k}.jpg", "sem_seg_file_name": str(path)})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes), unseen_classes=list(unseen), ignore_label=255
    )
    return name, records


def one_hot_logits(pred, num_classes: int) -> torch.Tensor:
    pred = torch.as_tensor(np.asarray(pred), dtype=torch.long)
    return torch.nn.functional.one_hot(pred, num_classes).permute(2, 0, 1).float()


def evaluate(tmp_path, gts, preds, classes=CLASSES, unseen=UNSEEN, **kwargs) -> dict:
    name, records = register_toy(tmp_path, gts, classes, unseen)
    evaluator = GZSSSemSegEvaluator(name, distributed=False, **kwargs)
    evaluator.reset()
    for record, pred in zip(records, preds):
        evaluator.process([record], [{"sem_seg": one_hot_logits(pred, len(classes))}])
    return evaluator.evaluate()["sem_seg"]


def assert_metrics(res: dict, expected: dict) -> None:
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(res[key]), (key, res[key])
        else:
            assert res[key] == pytest.approx(value, abs=1e-9), (key, res[key], value)


def test_seen_only_image(tmp_path):
    # gt   a a b b      class a: tp 1, gt 2, pred 1 -> IoU 1/2
    # pred a b b b      class b: tp 2, gt 2, pred 3 -> IoU 2/3
    # No unseen class in the ground truth: mIoU(unseen) and hIoU are NaN (nothing to average).
    res = evaluate(tmp_path, [[[0, 0, 1, 1]]], [[[0, 1, 1, 1]]], report_both_conventions=True)
    assert_metrics(
        res,
        {
            "mIoU(seen)": 100 * (1 / 2 + 2 / 3) / 2,  # 58.33
            "mIoU(unseen)": NAN,
            "hIoU": NAN,
            "mIoU": 100 * (1 / 2 + 2 / 3) / 2,
            "pAcc": 75.0,  # 3 of 4 pixels
            "mAcc": 100 * (1 / 2 + 1) / 2,
            "fwIoU": 100 * (2 * 1 / 2 + 2 * 2 / 3) / 4,
            "IoU-a": 50.0,
            "IoU-b": 100 * 2 / 3,
            "IoU-c": NAN,
            "IoU-d": NAN,
            # v0.6 counts classes with gt + pred > 0: a and b only here, so the same numbers.
            "mIoU(seen)[d2v0.6]": 100 * (1 / 2 + 2 / 3) / 2,
            "mIoU(unseen)[d2v0.6]": NAN,
            "mIoU[d2v0.6]": 100 * (1 / 2 + 2 / 3) / 2,
        },
    )


def test_unseen_only_image_and_a_predicted_absent_class(tmp_path):
    # gt   c c d d d    class c: tp 1, gt 2, pred 1 -> 1/2
    # pred c d d d a    class d: tp 2, gt 3, pred 3 -> union 4 -> 1/2
    #                   class a: gt 0, pred 1 -> absent: skipped; v0.6 counts it as 0
    res = evaluate(tmp_path, [[[2, 2, 3, 3, 3]]], [[[2, 3, 3, 3, 0]]], report_both_conventions=True)
    assert_metrics(
        res,
        {
            "mIoU(seen)": NAN,
            "mIoU(unseen)": 50.0,
            "hIoU": NAN,
            "mIoU": 50.0,
            "pAcc": 60.0,
            "IoU-a": NAN,
            "mIoU(seen)[d2v0.6]": 0.0,  # 0 / 1 (class a touched by a prediction)
            "mIoU(unseen)[d2v0.6]": 50.0,
            "hIoU[d2v0.6]": 0.0,
            "mIoU[d2v0.6]": 100 * (0.5 + 0.5) / 3,  # 33.33: a, c, d touched
        },
    )


def test_errors_that_cross_the_split(tmp_path):
    # gt   a a a a b b c c d d     seen a, b (6 pixels); unseen c, d (4 pixels)
    # pred a c c a b d c a d d     seen -> unseen: the two a's predicted c, one b predicted d
    #                              unseen -> seen: one c predicted a
    # predicted c: 3 pixels, 2 of them seen truth (a); predicted d: 3 pixels, 1 seen (b)
    gt = [[0, 0, 0, 0, 1, 1, 2, 2, 3, 3]]
    pred = [[0, 2, 2, 0, 1, 3, 2, 0, 3, 3]]
    res = evaluate(tmp_path, [gt], [pred])
    assert_metrics(
        res,
        {
            "seen_as_unseen": 100 * 3 / 6,
            "unseen_as_seen": 100 * 1 / 4,
            "FromSeen-c": 100 * 2 / 3,
            "FromSeen-d": 100 * 1 / 3,
            "IoU-c": 100 * 1 / 4,  # tp 1, gt 2, pred 3
        },
    )
    assert "FromSeen-a" not in res
    # a class never predicted has no such share; a set without seen truth has no seen_as_unseen
    res = evaluate(tmp_path, [[[2, 2, 3]]], [[[2, 2, 0]]])
    assert_metrics(res, {"seen_as_unseen": NAN, "unseen_as_seen": 100 / 3, "FromSeen-c": 0.0})
    assert math.isnan(res["FromSeen-d"])


def test_absent_classes_under_both_conventions(tmp_path):
    # gt   a a a c      a: tp 2, gt 3, pred 2 -> 2/3     c: tp 0, gt 1, pred 0 -> 0
    # pred a a b d      b, d: predicted once, absent from gt
    # primary: seen = a -> 66.67, unseen = c -> 0, hIoU 0, mIoU = (2/3 + 0) / 2 = 33.33
    # v0.6:    seen = 2/3 over {a, b} = 33.33, unseen = 0 over {c, d}, all = 2/3 over 4 = 16.67
    gts, preds = [[[0, 0, 0, 2]]], [[[0, 0, 1, 3]]]
    res = evaluate(tmp_path, gts, preds, report_both_conventions=True)
    assert_metrics(
        res,
        {
            "mIoU(seen)": 100 * 2 / 3,
            "mIoU(unseen)": 0.0,
            "hIoU": 0.0,
            "mIoU": 100 / 3,
            "pAcc": 50.0,
            "fwIoU": 100 * (3 * 2 / 3 + 1 * 0) / 4,
            "IoU-b": NAN,
            "IoU-c": 0.0,
            "mIoU(seen)[d2v0.6]": 100 / 3,
            "mIoU(unseen)[d2v0.6]": 0.0,
            "mIoU[d2v0.6]": 100 * (2 / 3) / 4,
            "hIoU[d2v0.6]": 0.0,
        },
    )
    without = evaluate(tmp_path, gts, preds)
    assert not any(k.endswith("[d2v0.6]") for k in without)
    assert {k: v for k, v in res.items() if "[d2v0.6]" not in k}.keys() == without.keys()


def test_harmonic_mean_and_all_ignore_images(tmp_path):
    # gt   a b c d      a: tp 1, pred 2 -> 1/2; b: 1; c: 1; d: tp 0, gt 1 -> 0
    # pred a b c a      seen (1/2 + 1) / 2 = 75, unseen (1 + 0) / 2 = 50, hIoU = 2*75*50/125 = 60
    gt, pred = [[0, 1, 2, 3]], [[0, 1, 2, 0]]
    expected = {"mIoU(seen)": 75.0, "mIoU(unseen)": 50.0, "hIoU": 60.0, "mIoU": 62.5, "pAcc": 75.0}
    assert_metrics(evaluate(tmp_path, [gt], [pred]), expected)
    # An image whose labels are all ignore changes nothing, whatever is predicted there.
    ignored = [[I, I, I], [I, I, I]]
    assert_metrics(evaluate(tmp_path, [gt, ignored], [pred, [[3, 3, 1], [0, 0, 2]]]), expected)
    # Only ignore: nothing to measure, every metric NaN (and a warning), no crash.
    res = evaluate(tmp_path, [ignored], [[[3, 3, 1], [0, 0, 2]]])
    assert all(math.isnan(v) for v in res.values())


def test_open_vocabulary_sets_report_no_split_metrics(tmp_path):
    res = evaluate(tmp_path, [[[0, 1, 2, 3]]], [[[0, 1, 2, 0]]], unseen=[])
    assert not {"mIoU(seen)", "mIoU(unseen)", "hIoU"} & res.keys()
    assert res["mIoU"] == pytest.approx(62.5)
    assert not any(
        isinstance(v, float) and math.isnan(v) for k, v in res.items() if "IoU-" not in k
    )


def random_case(seed: int, n: int = 7, shapes=((23, 31), (17, 40), (9, 9))):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for shape in shapes:
        gt = rng.integers(0, n - 1, size=shape)  # the last class never occurs in the gt
        gt[rng.random(shape) < 0.2] = I
        # Mostly right, with noise, so IoUs are spread between 0 and 1.
        pred = np.where(
            rng.random(shape) < 0.6, np.where(gt == I, 0, gt), rng.integers(0, n, size=shape)
        )
        gts.append(gt)
        preds.append(pred)
    return gts, preds


# detectron2's own process() calls np.array(tensor, dtype=int), which numpy 2 flags.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_agrees_with_an_independent_computation(tmp_path):
    n = 7
    classes = [f"class{i}" for i in range(n)]
    unseen = ["class1", "class4", "class6"]
    gts, preds = random_case(0, n)
    out = tmp_path / "eval"
    res = evaluate(
        tmp_path, gts, preds, classes, unseen, report_both_conventions=True, output_dir=str(out)
    )

    gt = np.concatenate([g.ravel() for g in gts])
    pred = np.concatenate([p.ravel() for p in preds])
    keep = gt != I
    cm = confusion_matrix(gt[keep], pred[keep], labels=list(range(n)))  # cm[gt, pred]
    tp, gt_count, pred_count = np.diag(cm), cm.sum(1), cm.sum(0)
    iou = tp / (gt_count + pred_count - tp)
    present = gt_count > 0
    assert not present[6] and pred_count[6] > 0  # an absent but predicted class is exercised
    seen_ids, unseen_ids = [0, 2, 3, 5], [1, 4, 6]

    def mean(ids, denominator_mask):
        ids = np.asarray(ids)
        return 100 * iou[ids[present[ids]]].sum() / denominator_mask[ids].sum()

    touched = (gt_count + pred_count) > 0
    s, u = mean(seen_ids, present), mean(unseen_ids, present)
    s6, u6 = mean(seen_ids, touched), mean(unseen_ids, touched)
    assert_metrics(
        res,
        {
            "mIoU(seen)": s,
            "mIoU(unseen)": u,
            "hIoU": 2 * s * u / (s + u),
            "mIoU": mean(range(n), present),
            "pAcc": 100 * tp.sum() / keep.sum(),
            "fwIoU": 100 * (iou[present] * gt_count[present]).sum() / keep.sum(),
            "mIoU(seen)[d2v0.6]": s6,
            "mIoU(unseen)[d2v0.6]": u6,
            "hIoU[d2v0.6]": 2 * s6 * u6 / (s6 + u6),
            "mIoU[d2v0.6]": mean(range(n), touched),
            **{f"IoU-class{i}": 100 * iou[i] if present[i] else NAN for i in range(n)},
        },
    )
    assert u6 < u  # the absent class 6 lowers the v0.6 unseen mean
    # errors that cross the split, and the saved confusion matrix (rows predicted)
    is_unseen = np.isin(np.arange(n), unseen_ids)
    cross = cm[np.ix_(~is_unseen, is_unseen)].sum()  # gt seen, predicted unseen
    assert res["seen_as_unseen"] == pytest.approx(100 * cross / cm[~is_unseen].sum())
    back = cm[np.ix_(is_unseen, ~is_unseen)].sum()
    assert res["unseen_as_seen"] == pytest.approx(100 * back / cm[is_unseen].sum())
    for i in unseen_ids:
        from_seen = cm[~is_unseen, i].sum() / pred_count[i]
        assert res[f"FromSeen-class{i}"] == pytest.approx(100 * from_seen)
    saved = json.loads((out / PER_CLASS_FILE).read_text())
    assert np.array_equal(np.array(saved["confusion"]), cm.T)

    # detectron2's own evaluator (this version averages over classes present in the gt).
    name, records = register_toy(tmp_path, gts, classes, unseen)
    d2 = SemSegEvaluator(name, distributed=False, sem_seg_loading_fn=read_label_map)
    d2.reset()
    for record, p in zip(records, preds):
        d2.process([record], [{"sem_seg": one_hot_logits(p, n)}])
    d2_res = d2.evaluate()["sem_seg"]
    for ours, theirs in (("mIoU", "mIoU"), ("fwIoU", "fwIoU"), ("pAcc", "pACC"), ("mAcc", "mACC")):
        assert res[ours] == pytest.approx(d2_res[theirs]), ours
    for c in classes:
        assert res[f"IoU-{c}"] == pytest.approx(d2_res[f"IoU-{c}"], nan_ok=True)


def test_per_class_json_and_table(tmp_path):
    out = tmp_path / "eval"
    records_logger = logging.getLogger("clipzss_d2.evaluation.gzss_evaluation")
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    records_logger.addHandler(handler)
    old_level = records_logger.level
    records_logger.setLevel(logging.INFO)
    try:
        res = evaluate(tmp_path, [[[0, 0, 0, 2]]], [[[0, 0, 1, 3]]], output_dir=str(out))
    finally:
        records_logger.removeHandler(handler)
        records_logger.setLevel(old_level)
    saved = json.loads((out / PER_CLASS_FILE).read_text())
    assert [c["name"] for c in saved["classes"]] == CLASSES
    assert [c["split"] for c in saved["classes"]] == ["seen", "seen", "unseen", "unseen"]
    assert saved["classes"][0]["iou"] == pytest.approx(100 * 2 / 3)
    assert saved["classes"][1]["iou"] is None  # absent from the gt
    assert (saved["classes"][0]["gt_pixels"], saved["classes"][0]["tp_pixels"]) == (3, 2)
    assert saved["metrics"]["hIoU"] == res["hIoU"] == 0.0
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    table = "\n".join(messages)
    assert "| seen " in table and "| unseen " in table and "hIoU" in table


def test_mismatched_predictions_are_refused(tmp_path):
    name, records = register_toy(tmp_path, [[[0, 1, 2, 3]]])
    evaluator = GZSSSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    with pytest.raises(ValueError, match=r"expected \(4, H, W\)"):
        evaluator.process(records, [{"sem_seg": torch.zeros(3, 1, 4)}])
    with pytest.raises(ValueError, match="must output the original image size"):
        evaluator.process(records, [{"sem_seg": torch.zeros(4, 2, 4)}])
    bad_name, bad_records = register_toy(tmp_path, [[[0, 1, 9, 3]]])
    bad = GZSSSemSegEvaluator(bad_name, distributed=False)
    bad.reset()
    with pytest.raises(ValueError, match=r"label ids \[9\] outside 0..3"):
        bad.process(bad_records, [{"sem_seg": torch.zeros(4, 1, 4)}])


# ---- multi-process -----------------------------------------------------------------------------


def _distributed_worker(gt_files, preds, classes, unseen, out_file):
    """Runs in each of the spawned processes: evaluate this rank's share, gather on rank 0."""
    from detectron2.utils import comm

    name = "gzss_toy_distributed"
    records = [
        {"file_name": f"img_{k}.jpg", "sem_seg_file_name": f} for k, f in enumerate(gt_files)
    ]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=classes, unseen_classes=unseen, ignore_label=255)
    evaluator = GZSSSemSegEvaluator(name, distributed=True, report_both_conventions=True)
    evaluator.reset()
    rank, world = comm.get_rank(), comm.get_world_size()
    assert world == 2
    for k in range(rank, len(records), world):
        evaluator.process([records[k]], [{"sem_seg": one_hot_logits(preds[k], len(classes))}])
    res = evaluator.evaluate()
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump({k: (None if math.isnan(v) else v) for k, v in res["sem_seg"].items()}, f)
    else:
        assert res is None
    leave_process_groups()


def test_two_processes_give_the_one_process_numbers(tmp_path):
    n = 7
    classes = [f"class{i}" for i in range(n)]
    unseen = ["class1", "class4", "class6"]
    gts, preds = random_case(1, n, shapes=((20, 30), (15, 25), (30, 10), (12, 12), (8, 40)))
    single = evaluate(tmp_path, gts, preds, classes, unseen, report_both_conventions=True)
    gt_files = []
    for k, gt in enumerate(gts):
        gt_files.append(str(tmp_path / f"dist_{k}.png"))
        Image.fromarray(gt.astype(np.uint8)).save(gt_files[-1])
    out_file = tmp_path / "dist.json"
    launch(
        _distributed_worker,
        2,  # processes; on a machine without CUDA detectron2 uses the gloo backend
        dist_url="auto",
        args=(gt_files, [p.tolist() for p in preds], classes, unseen, str(out_file)),
    )
    multi = json.loads(out_file.read_text())
    assert multi.keys() == single.keys()
    for key, value in single.items():
        assert multi[key] == (None if math.isnan(value) else pytest.approx(value)), key
