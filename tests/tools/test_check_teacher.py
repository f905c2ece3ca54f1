"""tools/check_teacher.py: the teacher and PLM checked as training runs them.

- On the miniature world with a trained teacher, the tool's share and purity equal the figures
  the training step's own probe (MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS) records on the same
  batch: one implementation (PixelLearningModule.pseudo_targets), even when the sweep reuses
  K-Means results clustered for other window sets.
- On planted token maps whose answer is known by construction, the sweep's figures and its
  chosen setting are that answer.
- On the real VOC samples through configs/voc.yaml (random CLIP of the real ViT-B/16
  architecture), the command runs end to end and writes its report.
- User mistakes end in one line and exit status 2.
"""

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.miniworld import generate_world, register_miniworld
from clipzss_d2.miniworld import train_teacher as T
from clipzss_d2.miniworld import world as W
from clipzss_d2.modeling.training.plm import PixelLearningModule
from clipzss_d2.modeling.training.teacher import TeacherOutput
from tests.helpers import VOC_CONFIG, load_script
from tests.miniworld.test_miniworld_teacher import QUICK, miniworld_cfg

tool = load_script("tools/check_teacher.py")


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- one implementation: the tool's figures are the training step's ----------------------------
@pytest.fixture(scope="module")
def miniworld(tmp_path_factory):
    """A small generated world (registered as miniworld_*, the default root afterwards) and a
    briefly trained teacher (tests/miniworld/test_miniworld_teacher.py's QUICK)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    generate_world(root, seed=0, counts={"train": 12, "tune": 0, "test": 0}, workers=1)
    register_miniworld(root)
    teacher = str(tmp_path_factory.mktemp("teacher") / "clip_miniworld.pt")
    T.get_miniworld_teacher(teacher, QUICK, evaluate=False, progress=False, workers=0)
    yield teacher
    register_miniworld()
    torch.set_num_threads(before)


def test_the_tools_figures_are_the_training_diagnostics(miniworld):
    cfg = miniworld_cfg(miniworld, "MODEL.CLIPZSS.DIAGNOSTICS.PSEUDO_LABELS", True)
    torch.manual_seed(0)
    model = build_model(cfg)
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    np.random.seed(0)  # noqa: NPY002
    batch = [mapper(r) for r in DatasetCatalog.get("miniworld_train")[:8]]

    model.train()
    model(batch)  # a training step: PLM's pseudo labels counted by the model's probe
    training = model.pseudo_label_probe.summary()
    assert training["unseen_share"] and training["unseen_purity"]  # figures to compare

    model.eval()
    p = cfg.MODEL.CLIPZSS.PLM
    default = tool.Setting(tuple(p.WINDOW_SIZES), p.FUSION_THRESHOLD)
    assert default == tool.Setting((2, 4, 6), 0.9)
    # the union of window sizes is clustered once; (2, 4, 6) is fused from it
    settings = tool.parse_settings("0.6,0.95", "4,6;2,4,6,8", default)
    assert len(settings) == 9 and settings[1] == default
    sweep = tool.Sweep(model.plm, settings, W.CLASSES, W.UNSEEN, 255, halo_px=0)
    assert sweep.windows == [2, 4, 6, 8]
    tool.check_batch(model, sweep, batch, default, {})
    rows, _ = sweep.results(default)
    figures = {(tuple(r["windows"]), r["threshold"]): r["summary"] for r in rows}
    assert figures[(default.windows, default.threshold)] == training
    assert figures[((2, 4, 6), 0.6)] != training  # the sweep varies what it says it varies


# -- planted token maps ----------------------------------------------------------------------------
# An 8 x 8 token grid of 16 px patches (128 x 128 px). Left half: a seen class (labelled), tokens
# e0. Right half, unlabelled: unseen u1 on token rows 0-4 (e1), unseen u2 on rows 5-7, tokens at
# cosine C to u1's. Lambda above C keeps u1 and u2 apart (two pure regions); below, they merge
# into one region whose majority is u1 (20 of 32 tokens).
C = 0.8
CLASSES, UNSEEN = ["seen", "u1", "u2"], ["u1", "u2"]


def planted_batch():
    token_class = torch.zeros(8, 8, dtype=torch.long)
    token_class[:5, 4:] = 1
    token_class[5:, 4:] = 2
    directions = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, C, math.sqrt(1 - C**2)]])
    tokens = directions[token_class].permute(2, 0, 1)[None]  # 1 x 3 x 8 x 8
    teacher = TeacherOutput(
        cls_embed=torch.zeros(1, 3),
        patch_embed=tokens,
        token_valid=torch.ones(1, 8, 8, dtype=torch.bool),
    )
    hidden = token_class.repeat_interleave(16, 0).repeat_interleave(16, 1)
    targets = torch.where(hidden == 0, 0, 255)[None]
    valid = torch.ones_like(targets, dtype=torch.bool)
    return [{"hidden_sem_seg": hidden}], targets, valid, teacher


def sweep_planted(plm, lambdas, window_sets, default):
    inputs, targets, valid, teacher = planted_batch()
    settings = tool.parse_settings(lambdas, window_sets, default)
    sweep = tool.Sweep(plm, settings, CLASSES, UNSEEN, 255, halo_px=8)
    sweep.observe(inputs, targets, valid, teacher, num_seen=1, grid=None)
    rows, best = sweep.results(default)
    return {(tuple(r["windows"]), r["threshold"]): r for r in rows}, best


def test_the_sweep_finds_the_planted_answer():
    plm = PixelLearningModule(embed_dim=3, synthesizer=False, window_sizes=(2, 4, 8))
    default = tool.Setting((2, 4, 8), 0.5)  # a poor configured setting: the sweep must leave it
    rows, best = sweep_planted(plm, "0.5,0.7,0.9,0.95", "2", default)
    for windows in ((2, 4, 8), (2,)):
        for lam in (0.9, 0.95):  # apart: every unseen pixel labelled, by a pure region
            s = rows[(windows, lam)]["summary"]
            assert (s["unseen_share"], s["unseen_purity"], s["regions_per_image"]) == (1, 1, 2)
            assert rows[(windows, lam)]["score"] == 1.0
            assert s["per_class"]["u2"] == {
                "unlabelled_pixels": 12 * 256, "share": 1.0, "regions": 1, "purity": 1.0
            }  # fmt: skip
            # the band of 8 px beside the seen half: labelled too (PLM's halo rule is off)
            assert s["halo_share"] == 1.0
        for lam in (0.5, 0.7):  # merged: one region, u1 its majority
            s = rows[(windows, lam)]["summary"]
            assert (s["unseen_share"], s["regions_per_image"]) == (1, 1)
            assert s["unseen_purity"] == s["per_class"]["u1"]["purity"] == 20 / 32
            assert s["per_class"]["u2"]["regions"] == 0
    assert best == tool.Setting((2, 4, 8), 0.9)  # first of the tied best, in sweep order
    assert best.config_line == (
        "MODEL.CLIPZSS.PLM.FUSION_THRESHOLD 0.9 MODEL.CLIPZSS.PLM.WINDOW_SIZES [2, 4, 8]"
    )
    # the configured setting wins a tie
    _, best = sweep_planted(plm, "0.9,0.95", "2", tool.Setting((2, 4, 8), 0.95))
    assert best == tool.Setting((2, 4, 8), 0.95)


def test_the_halo_rule_shows_in_the_halo_share():
    """PLM.SEEN_HALO_RADIUS 8: the 8 px band beside the seen half gets no pseudo label, so
    its share is 0 and each unseen class loses 8 of its 64 pixel columns."""
    plm = PixelLearningModule(embed_dim=3, synthesizer=False, seen_halo_radius=8)
    rows, _ = sweep_planted(plm, "0.9", "2,4,8", tool.Setting((2, 4, 8), 0.9))
    s = rows[((2, 4, 8), 0.9)]["summary"]
    assert s["halo_share"] == 0.0 and s["unseen_share"] == 56 / 64


# -- the real VOC samples, end to end -------------------------------------------------------------
@pytest.fixture(scope="module")
def voc_root(shared_data, tmp_path_factory):
    """The VOC samples prepared and registered under a temporary root (the previous root is
    registered again afterwards)."""
    from clipzss_d2.data import register_all_zeroshot, registered_root
    from clipzss_d2.data.prepare import prepare_voc
    from tests.data_samples import stage_voc

    root = tmp_path_factory.mktemp("datasets")
    lists = stage_voc(shared_data, root)
    quiet = {"workers": 1, "log": lambda *a: None}
    assert all(s.ok for s in prepare_voc(str(root), aug_list=lists["aug_list"],
                                         val_list=lists["val_list"], **quiet))  # fmt: skip
    previous = registered_root()
    register_all_zeroshot(str(root))
    yield root
    register_all_zeroshot(previous)


# random weights of the real ViT-B/16 CLIP (no download, no text cache on disk); crops of 256
# px instead of 512 to keep the CPU time down
VOC_OPTS = ["MODEL.CLIPZSS.CLIP.PRETRAINED", "none", "MODEL.CLIPZSS.TEXT.CACHE_DIR", "",
            "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.CROP.SIZE", "(256, 256)",
            "INPUT.SIZE_DIVISIBILITY", "256", "INPUT.MIN_SIZE_TEST", "256",
            "DATALOADER.NUM_WORKERS", "0"]  # fmt: skip


@pytest.mark.slow
def test_the_command_runs_on_the_voc_samples(voc_root, tmp_path, capsys):
    out = tmp_path / "check"
    argv = ["--config-file", VOC_CONFIG, "--num-images", "9", "--num-val-images", "2",
            "--num-pictures", "2", "--lambdas", "0.8", "--window-sets", "4,8",
            "--output", str(out), *VOC_OPTS]  # fmt: skip
    assert tool.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    report = (out / "teacher_check.md").read_text()
    assert report in printed and "Use: MODEL.CLIPZSS.PLM.FUSION_THRESHOLD " in printed
    assert "9 of the 9 images of voc20_zs_train (all of them)" in report

    results = json.loads((out / "teacher_check.json").read_text())
    check = results["pseudo_labels"]
    assert check["images"] == 9 and check["default"] == {"windows": [2, 4, 8], "threshold": 0.9}
    # windows {2,4,8} (the config's) and {4,8}, lambda 0.8 and 0.9 (the config's)
    assert [(r["windows"], r["threshold"]) for r in check["sweep"]] == [
        ([2, 4, 8], 0.8), ([2, 4, 8], 0.9), ([4, 8], 0.8), ([4, 8], 0.9)
    ]  # fmt: skip
    for row in check["sweep"]:
        s = row["summary"]
        assert s["images"] == 9 and s["regions_per_image"] > 0
        assert 0 < s["void_share"] <= 1  # VOC's background is void, PLM's main ground
        assert s["halo_share"] == 0.0  # configs/voc.yaml's SEEN_HALO_RADIUS 8 = --halo-px 8
        assert s["per_class"]["sofa"]["unlabelled_pixels"] > 0  # the samples' unseen object
    best = check["best"]
    assert f"Best setting: `{best['config_line']}`" in report
    teacher = results["teacher_zero_shot"]
    assert teacher["dataset"] == "voc20_zs_val" and teacher["images"] == 2
    assert 0 <= teacher["mIoU"] <= 100 and "mIoU(unseen)" in teacher
    assert (out / "teacher_zero_shot" / "gzss_per_class_iou.json").is_file()
    grid = cv2.imread(str(out / "teacher_check.png"))
    assert grid.shape[0] == 2 * (256 + 4) and grid.shape[1] >= 4 * 256 * 0.5

    # a second run into the same folder is refused, and allowed with --overwrite
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert tool.main(argv) == 2
    assert "pass --overwrite" in one_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def planted_teacher(monkeypatch, cosine: float):
    """The teacher's tokens planted from the batch's hidden labels: each patch takes the
    direction of its majority class (void: its own), all orthogonal except sofa, which is at
    `cosine` to void (VOC's background). The tool's code runs unchanged around them."""
    from clipzss_d2.modeling.meta_arch import CLIPZSS

    sofa, void = 17, 20
    directions = torch.eye(21)
    directions[sofa] = cosine * directions[void] + math.sqrt(1 - cosine**2) * directions[sofa]
    batch = {}
    training_targets = CLIPZSS.training_targets

    def keep_hidden(self, images, batched_inputs):
        out = training_targets(self, images, batched_inputs)
        hidden = torch.full_like(out[0], 255)
        for i, x in enumerate(batched_inputs):
            h, w = x["hidden_sem_seg"].shape
            hidden[i, :h, :w] = x["hidden_sem_seg"]
        batch["hidden"] = hidden
        return out

    def tokens(self, images, image_sizes=None):
        hidden = batch["hidden"].masked_fill(batch["hidden"] == 255, void)
        onehot = torch.nn.functional.one_hot(hidden, 21).permute(0, 3, 1, 2).float()
        majority = torch.nn.functional.avg_pool2d(onehot, 16).argmax(1)  # B x h x w
        rows = torch.arange(majority.shape[1])[None, :, None] < image_sizes[:, 0, None, None] // 16
        cols = torch.arange(majority.shape[2])[None, None, :] < image_sizes[:, 1, None, None] // 16
        patch = directions[majority].permute(0, 3, 1, 2)
        return TeacherOutput(torch.zeros(len(patch), 21), patch, rows & cols)

    monkeypatch.setattr(CLIPZSS, "training_targets", keep_hidden)
    monkeypatch.setattr(CLIPZSS, "run_teacher", tokens)


def test_the_sweep_finds_the_planted_answer_on_the_voc_samples(voc_root, tmp_path, monkeypatch):
    """Sofa's tokens at cosine 0.8 to the background's: lambda 0.9 keeps sofa apart (pure sofa
    regions), 0.7 merges it into the background (no region has a sofa majority, score 0). The
    config says 0.7; the sweep must say 0.9."""
    planted_teacher(monkeypatch, cosine=0.8)
    out = tmp_path / "planted"
    argv = ["--config-file", VOC_CONFIG, "--num-images", "9", "--num-val-images", "0",
            "--num-pictures", "0", "--lambdas", "0.7,0.9", "--window-sets", "2,4,8",
            "--output", str(out), *VOC_OPTS, "MODEL.CLIPZSS.PLM.FUSION_THRESHOLD", "0.7"]  # fmt: skip
    assert tool.main(argv) == 0
    check = json.loads((out / "teacher_check.json").read_text())["pseudo_labels"]
    rows = {r["threshold"]: r for r in check["sweep"]}
    apart, merged = (
        rows[0.9]["summary"]["per_class"]["sofa"],
        rows[0.7]["summary"]["per_class"]["sofa"],
    )
    assert apart["unlabelled_pixels"] == merged["unlabelled_pixels"] > 0
    # not 1: 16 px patches straddle sofa's edges and VOC's void ring around it
    assert apart["regions"] >= 1 and apart["purity"] > 0.6 and apart["share"] > 0.5, apart
    assert merged["regions"] == 0 and rows[0.7]["score"] == 0
    assert check["best"]["threshold"] == 0.9 and rows[0.9]["score"] > 0.3, rows[0.9]


# -- one-line errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num-images", "0"], "--num-images must be at least 1, got 0."),
        (["--lambdas", "0.8,x"], "--lambdas '0.8,x'"),
        (["--lambdas", "1.5"], "each value must be in (0, 1]"),
        (["DATASETS.TRAIN", "('no_such_set',)"], "no_such_set is not a registered dataset"),
        (
            ["--num-val-images", "0", "MODEL.CLIPZSS.PLM.KMEANS_METRIC", "manhattan"],
            "Invalid config",
        ),  # fmt: skip
    ],
)
def test_user_mistakes_end_in_one_line(extra, message, tmp_path, capsys):
    argv = ["--config-file", VOC_CONFIG, "--output", str(tmp_path / "out"), *extra,
            "MODEL.DEVICE", "cpu"]  # fmt: skip
    assert tool.main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("check_teacher.py: error: ") and message in line
    assert not (tmp_path / "out").exists()


def test_an_earlier_report_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "teacher_zero_shot").mkdir(parents=True)
    (out / "teacher_zero_shot" / "gzss_per_class_iou.json").write_text("{}")
    argv = ["--config-file", VOC_CONFIG, "--output", str(out), "MODEL.DEVICE", "cpu"]
    assert tool.main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "already holds a teacher check (teacher_zero_shot/gzss_per_class_iou.json)" in line
    assert (out / "teacher_zero_shot" / "gzss_per_class_iou.json").read_text() == "{}"


@pytest.mark.slow
def test_the_command_runs_on_a_custom_dataset_file(tmp_path):
    """DATASETS.CUSTOM (a YAML dataset file with its own classes and unseen split), the tiny CLIP:
    the user's own data, through the command line, with its exit status."""
    from tests.data.test_custom_dataset import UNSEEN, write_dataset_file
    from tests.helpers import BASE_CONFIG, ROOT, TINY_MODEL_OPTS

    dataset = write_dataset_file(tmp_path, "coco")  # farm_train (4 images), farm_val (2)
    out = tmp_path / "check"
    command = [
        sys.executable, "tools/check_teacher.py", "--config-file", BASE_CONFIG,
        "--num-images", "4", "--num-val-images", "2", "--num-pictures", "2",
        "--lambdas", "0.8", "--output", str(out), *[str(o) for o in TINY_MODEL_OPTS],
        "DATASETS.CUSTOM", f"['{dataset}']", "DATASETS.TRAIN", "('farm_train',)",
        "DATASETS.TEST", "('farm_val',)", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.MIN_SIZE_TRAIN", "(32,)", "INPUT.CROP.SIZE", "(32, 32)",
        "INPUT.SIZE_DIVISIBILITY", "32", "INPUT.MIN_SIZE_TEST", "32",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "teacher_check.json").read_text())
    check = results["pseudo_labels"]
    assert check["images"] == 4
    assert {r["threshold"] for r in check["sweep"]} == {0.8, 0.9}  # --lambdas and the config's
    assert set(check["sweep"][0]["summary"]["per_class"]) >= set(UNSEEN)
    assert results["teacher_zero_shot"]["dataset"] == "farm_val"
    assert results["teacher_zero_shot"]["images"] == 2
    assert (out / "teacher_check.png").is_file() and (out / "teacher_check.md").is_file()
    assert "Use: MODEL.CLIPZSS.PLM.FUSION_THRESHOLD " in proc.stdout
