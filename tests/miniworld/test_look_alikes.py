"""The look-alike probe of the world's teacher: crops of the dataset's files, scored by CLS."""

import json
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix

from clipzss_d2.miniworld import look_alikes as L
from clipzss_d2.miniworld import world as W
from tests.helpers import ROOT as REPO_ROOT

STAR, SAND, WATER = W.CLASS_ID["star"], W.CLASS_ID["sand"], W.CLASS_ID["water"]


def test_crop_boxes_hand_worked():
    label = np.full((60, 100), SAND, np.uint8)
    label[30:60, 30:60] = WATER  # 900 pixels: no 48 x 48 window is 90 % water
    label[10:20, 10:16] = STAR  # 6 wide, 10 high: a 20-pixel square centred at (13, 15)
    label[50:55, 90:98] = STAR  # 8 x 5 at the corner: a 16-pixel square shifted inside
    label[0:3, 50:52] = STAR  # 6 pixels: too small to crop
    label[40, 0:5] = W.IGNORE_LABEL
    boxes = sorted(L.crop_boxes(label))
    assert boxes == [
        (STAR, (3, 5, 23, 25)),
        (STAR, (84, 44, 100, 60)),
        # the first window in row-major order that is all sand: x >= 52 clears the stars
        (SAND, (52, 0, 100, 48)),
    ]


def test_report_against_open_clip_and_a_by_hand_count():
    torch.manual_seed(0)
    name = "ClipZSS-Tiny-Test"
    model = open_clip.create_model(name).eval()
    rng = np.random.default_rng(0)
    classes = ["star", "cross", "bar", "diamond", "square", "crescent", "ring", "disc"]
    classes += ["snow", "sand", "water"]
    truth = np.array([W.CLASS_ID[c] for c in classes for _ in range(6)])
    images = torch.from_numpy(rng.normal(size=(len(truth), 3, 32, 32)).astype(np.float32))
    report = L.look_alike_report(model, name, images, truth, batch_size=16)

    tok = open_clip.get_tokenizer(name)
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1).numpy()
        txt = F.normalize(
            model.encode_text(tok([f"a photo of a {c}." for c in W.CLASSES])), dim=-1
        ).numpy()
    sims = img @ txt.T

    def two_way(a, b):
        ia, ib = W.CLASS_ID[a], W.CLASS_ID[b]
        right_a = [sims[i, ia] > sims[i, ib] for i in range(len(truth)) if truth[i] == ia]
        right_b = [sims[i, ib] > sims[i, ia] for i in range(len(truth)) if truth[i] == ib]
        return (np.mean(right_a) + np.mean(right_b)) / 2

    for u, look_alike in W.LOOK_ALIKES.items():
        r = report["classes"][u]
        assert r["look_alike"] == look_alike
        assert r["vs_look_alike"] == pytest.approx(two_way(u, look_alike))
        kind = W.THINGS if u in W.THINGS else W.STUFF
        seen = [s for s in kind if s not in W.UNSEEN and W.CLASS_ID[s] in truth]
        assert r["vs_hardest"] == pytest.approx(min(two_way(u, s) for s in seen))
        nearest = max(
            (s for s in kind if s not in W.UNSEEN),
            key=lambda s: txt[W.CLASS_ID[u]] @ txt[W.CLASS_ID[s]],
        )
        assert r["text_nearest"] == nearest
    for kind, names in (("things", W.THINGS), ("stuff", W.STUFF)):
        ids = [W.CLASS_ID[n] for n in names]
        sel = np.isin(truth, ids)
        pred = np.array(ids)[sims[sel][:, ids].argmax(1)]
        expected = confusion_matrix(truth[sel], pred, labels=ids)
        assert report["confusion"][kind]["counts"] == expected.tolist()
    assert report["num_crops"] == len(truth)


@pytest.mark.slow
def test_the_command_on_a_generated_world(tmp_path):
    """`probe-teacher` on a freshly generated world with a two-step teacher: one crop per thing
    instance and stuff region of the split's files; a missing teacher is one line, exit 2."""
    root, teacher = tmp_path / "world", tmp_path / "teacher.pt"

    def miniworld(args: str):
        return subprocess.run(
            [sys.executable, "-m", "clipzss_d2.miniworld", *args.split()],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    gen = miniworld(f"generate --root {root} --num-train 1 --num-tune 4 --num-test 1 --workers 0")
    assert gen.returncode == 0, gen.stderr
    missing = miniworld(f"probe-teacher --root {root} --teacher {teacher}")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "Traceback" not in missing.stderr and "--teacher" in missing.stderr
    none = miniworld(f"probe-teacher --root {root} --max-images 0")
    assert none.returncode == 2 and "--max-images must be at least 1" in none.stderr
    train = miniworld(
        f"train-teacher --output {teacher} --steps 2 --batch-size 4 --no-eval --workers 0 --threads 1"
    )
    assert train.returncode == 0, train.stderr
    probe = miniworld(f"probe-teacher --root {root} --teacher {teacher} --json")
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)

    from clipzss_d2.data.label_io import read_label_map

    expected = sum(
        len(L.crop_boxes(read_label_map(str(p))))
        for p in sorted((root / "annotations_detectron2" / "tune").glob("*.png"))
    )
    assert report["num_crops"] == expected > 0
    counted = sum(sum(map(sum, c["counts"])) for c in report["confusion"].values())
    assert counted == expected
    assert set(report["classes"]) == set(W.UNSEEN)
