"""The model folder train_net.py leaves, and the TensorBoard scalars of the same run.

One real train_net.py run (subprocess, real VOC samples, tiny student, tiny CLIP whose weights
are a file) with periodic evaluation; then the folder is checked against independent
references: the training config detectron2 dumps, the checkpoint, CLIP embeddings recomputed
from the weights file, and the predictor built from the original config + model_final.pth. The
folder is used from another place, without the CLIP weights file, through the predictor, the
demo and the export tool.
"""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import open_clip
import pytest
import torch
import yaml
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from safetensors import safe_open

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.errors import UserInputError
from clipzss_d2.modeling.text_classifier import TextClassifier
from clipzss_d2.predictor import OpenVocabularyPredictor
from clipzss_d2.utils.config_loading import merge_config
from clipzss_d2.vocabulary import get_training_vocabulary, prompt_names
from tests.helpers import ROOT, TINY_CLIP, TINY_MODEL_OPTS, load_script
from tests.test_train_net import LOSSES, run_train_net, voc_root  # noqa: F401  (fixture)

VOC = str(ROOT / "configs" / "voc.yaml")
PHOTOS = ["2007_000129.jpg", "2007_001311.jpg"]
# As run_train_net sets them: the test resize the reference predictor must share.
TEST_SIZE = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(voc_root, tmp_path_factory):  # noqa: F811
    """A 4-iteration run evaluated after iteration 2 and at the end; CLIP weights in a file."""
    base = tmp_path_factory.mktemp("folder_run")
    torch.manual_seed(0)
    clip_file = base / "tiny_clip.pt"
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), clip_file)
    clip_opts = ["MODEL.CLIPZSS.CLIP.PRETRAINED", str(clip_file)]
    clip_opts += ["MODEL.CLIPZSS.CLIP.ACTIVATION", "gelu"]
    out = base / "run"
    log = run_train_net(voc_root, out, [], *clip_opts, "TEST.EVAL_PERIOD", "2")
    # what the user would pass to use the checkpoint without the folder
    reference_opts = [str(o) for o in TINY_MODEL_OPTS] + clip_opts + TEST_SIZE
    reference_opts += ["MODEL.WEIGHTS", str(out / "model_final.pth")]
    return {"out": out, "log": log, "clip": clip_file, "opts": reference_opts, "voc": voc_root}


def final_results(log: str) -> dict:
    """The last evaluation as detectron2 prints it ("copypaste:" CSV lines, 4 decimals)."""
    lines = [ln.split("copypaste: ", 1)[1] for ln in log.splitlines() if "copypaste: " in ln]
    keys, values = lines[-2].split(","), lines[-1].split(",")
    return {k: float(v) for k, v in zip(keys, values)}


def photos(run):
    folder = Path(run["voc"]) / "VOC2012" / "JPEGImages"
    return [cv2.imread(str(folder / name)) for name in PHOTOS]


@pytest.fixture(scope="module")
def reference(run):
    """The predictor from the original config + model_final.pth, as without a folder; the
    text embeddings of both vocabularies computed now, while the CLIP weights file is there."""
    predictor = OpenVocabularyPredictor.from_config_file(VOC, run["opts"])
    predictor.model.text_embeddings(predictor.vocabulary)
    predictor.model.text_embeddings(predictor.model.train_vocabulary)
    return predictor


@pytest.fixture
def moved(run, tmp_path):
    """The folder copied elsewhere; the original is moved away meanwhile (nothing may point
    back into it)."""
    original = run["out"] / "model"
    copy = tmp_path / "somewhere" / "else" / "my_model"
    shutil.copytree(original, copy)
    away = run["out"] / "model.away"
    original.rename(away)
    try:
        yield copy
    finally:
        away.rename(original)


@pytest.fixture
def no_clip_weights(run):
    """The CLIP weights file the config names is missing while the test runs."""
    away = run["clip"].with_suffix(".away")
    run["clip"].rename(away)
    try:
        yield
    finally:
        away.rename(run["clip"])


# -- TensorBoard ----------------------------------------------------------------------------------
def test_tensorboard_has_losses_lr_logit_scale_and_evaluations(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run["out"]), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in [*LOSSES, "total_loss", "lr", "logit_scale"]:
        assert tag in tags, (tag, sorted(tags))
        values = [e.value for e in events.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    # the learned scale written at the last step is the one model_final.pth holds
    ckpt = torch.load(run["out"] / "model_final.pth", map_location="cpu", weights_only=True)
    last = events.Scalars("logit_scale")[-1]
    assert last.step == 3
    assert last.value == pytest.approx(float(ckpt["model"]["log_logit_scale"].exp()), rel=1e-6)
    assert all(e.value > 0 for e in events.Scalars("lr"))
    # periodic evaluation (after iteration 2, step 1) and the final one (step 4)
    final = final_results(run["log"])
    for key in ("mIoU", "mIoU(seen)", "mIoU(unseen)", "hIoU", "pAcc"):
        scalars = events.Scalars(f"sem_seg/{key}")
        assert [e.step for e in scalars] == [1, 4], key
        value = scalars[-1].value
        assert (math.isnan(value) and math.isnan(final[key])) or value == pytest.approx(
            final[key], abs=1e-4
        ), key


# -- the folder's contents ------------------------------------------------------------------------
def test_folder_holds_config_student_weights_text_cache_and_card(run):
    folder = run["out"] / "model"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MODEL_CARD.md",
        "config.yaml",
        "model.pth",
        "text_cache",
    ]
    assert not [p for p in run["out"].iterdir() if p.name.startswith((".tmp-", ".old-"))]

    # config: the training config (as detectron2 dumped it) with the deployment keys changed
    got = merge_config(get_clipzss_cfg(), str(folder / "config.yaml"))
    trained = merge_config(get_clipzss_cfg(), str(run["out"] / "config.yaml"))
    assert got.MODEL.WEIGHTS == "model.pth" and got.MODEL.CLIPZSS.TEXT.CACHE_DIR == "text_cache"
    assert got.MODEL.CLIPZSS.STUDENT_ONLY
    voc_val = prompt_names(MetadataCatalog.get("voc20_zs_val"))
    assert list(got.MODEL.CLIPZSS.TEST_VOCABULARY) == voc_val
    trained.MODEL.WEIGHTS, trained.MODEL.CLIPZSS.STUDENT_ONLY = "model.pth", True
    trained.MODEL.CLIPZSS.TEXT.CACHE_DIR = "text_cache"
    trained.MODEL.CLIPZSS.TEST_VOCABULARY = voc_val
    trained.DATASETS.TRAIN, trained.DATASETS.TEST, trained.DATASETS.CUSTOM = (), (), []
    assert got.dump() == trained.dump()

    # weights: exactly the student of model_final.pth, nothing else, loadable weights_only
    saved = torch.load(folder / "model.pth", map_location="cpu", weights_only=True)
    assert list(saved) == ["model"]
    student_cfg = trained.clone()
    student_cfg.MODEL.WEIGHTS = ""
    student_keys = set(build_model(student_cfg).state_dict())
    assert set(saved["model"]) == student_keys
    final = torch.load(run["out"] / "model_final.pth", map_location="cpu", weights_only=True)
    assert "trainer" in final  # optimizer, scheduler...: what the folder leaves out
    assert any(k.startswith(("plm.", "glm.")) for k in final["model"])
    for key, value in saved["model"].items():
        torch.testing.assert_close(value, final["model"][key], rtol=0, atol=0)

    # text cache: the embeddings the CLIP weights file gives, under TextClassifier's own keys
    train_vocab = get_training_vocabulary(["voc20_zs_train"])
    clip = TextClassifier(TINY_CLIP, str(run["clip"]), "single", activation="gelu")
    reader = TextClassifier(
        TINY_CLIP, str(run["clip"]), "single", cache_dir=str(folder / "text_cache"),
        activation="gelu",
    )  # fmt: skip
    files = []
    for vocabulary in (voc_val, train_vocab):
        path = reader.cache_path(vocabulary)
        files.append(Path(path).name)
        with safe_open(path, framework="pt") as f:
            cached = f.get_tensor("embeddings")
        torch.testing.assert_close(cached, clip(vocabulary), rtol=0, atol=1e-6)
    assert sorted(p.name for p in (folder / "text_cache").iterdir()) == sorted(files)

    # card: datasets, split, CLIP, iterations and the final evaluation
    card = (folder / "MODEL_CARD.md").read_text()
    meta = MetadataCatalog.get("voc20_zs_train")
    assert "voc20_zs_train" in card and "voc20_zs_val" in card
    assert f"unseen: {', '.join(c for c in meta.stuff_classes if c in meta.unseen_classes)}" in card
    assert "`ClipZSS-Tiny-Test`" in card and "`gelu`" in card and str(run["clip"]) in card
    assert "iterations: 4" in card
    results = final_results(run["log"])
    row = next(line for line in card.splitlines() if line.startswith("| voc20_zs_val |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    header = next(line for line in card.splitlines() if line.startswith("| dataset |"))
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    for name, cell in zip(names, cells):
        expected = results[name]
        if math.isnan(expected):
            assert cell == "n/a", name
            continue
        # the card rounds the raw value to 2 decimals, the log to 4: near a boundary (0.0649...
        # printed 0.0650) the two roundings part, so compare within their sum
        assert re.fullmatch(r"-?\d+\.\d\d", cell), (name, cell)
        assert abs(float(cell) - expected) <= 0.005 + 0.00005 + 1e-9, (name, cell, expected)
    assert {"hIoU", "mIoU(unseen)"} <= set(names)


# -- using the folder alone -----------------------------------------------------------------------
def test_moved_folder_predicts_exactly_like_config_and_weights(run, reference, moved):
    predictor = OpenVocabularyPredictor.from_folder(str(moved))
    assert predictor.vocabulary == reference.vocabulary  # the test set's classes by default
    train_vocab = reference.model.train_vocabulary
    assert train_vocab and len(train_vocab) == 15
    for img in photos(run):
        for vocabulary in (None, train_vocab):
            got, expected = predictor(img, vocabulary), reference(img, vocabulary)
            np.testing.assert_array_equal(got.labels, expected.labels)
            np.testing.assert_array_equal(got.scores, expected.scores)
    assert not predictor.model.text_classifier.clip_loaded  # every vocabulary came from the folder


def test_folder_needs_no_clip_weights_for_cached_vocabularies(
    run, reference, moved, no_clip_weights, tmp_path
):
    predictor = OpenVocabularyPredictor.from_folder(str(moved))
    img = photos(run)[0]
    np.testing.assert_array_equal(predictor(img).labels, reference(img).labels)
    with pytest.raises(UserInputError, match="does not exist"):
        predictor(img, vocabulary="zebra,giraffe")

    # the demo, as a user runs it: the cached default vocabulary works, another one is refused
    photo = Path(run["voc"]) / "VOC2012" / "JPEGImages" / PHOTOS[0]
    demo = [sys.executable, str(ROOT / "demo" / "demo.py"), "--model-folder", str(moved)]
    demo += ["--input", str(photo), "--save-label-map"]
    proc = subprocess.run(
        [*demo, "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    labels = cv2.imread(str(tmp_path / "out" / "2007_000129_labels.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, reference(img).labels)
    proc = subprocess.run(
        [*demo, "--output", str(tmp_path / "out2"), "--vocab", "zebra,giraffe"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("demo.py: error: ") and str(run["clip"]) in error, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out2").exists()


def test_export_tool_takes_the_folder(run, reference, moved, no_clip_weights, tmp_path):
    export = load_script("tools/export_model.py", "clipzss_export_from_folder")
    out = tmp_path / "exported"
    argv = ["--model-folder", str(moved), "--vocab-dataset", "voc20_zs_val", "--output", str(out)]
    argv += ["--format", "torchscript", "--height", "64", "--width", "96"]
    assert export.main(argv) == 0
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 64, 96), dtype=torch.uint8, generator=g)
    labels, scores = torch.jit.load(str(out / "model.ts"))(image)
    with torch.no_grad():
        logits = reference.model([{"image": image[0].float()}])[0]["sem_seg"]
    probs = logits.softmax(0)
    expected_scores, expected_labels = probs.max(0)
    torch.testing.assert_close(scores[0], expected_scores, atol=1e-5, rtol=1e-5)
    # a random tiny model has near-ties; the labels must agree wherever the top two differ
    top2 = probs.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-5
    assert clear.float().mean() > 0.9
    torch.testing.assert_close(labels[0][clear], expected_labels[clear])


def test_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    demo = load_script("demo/demo.py", "clipzss_demo_folder")
    args = ["--input", "x.jpg", "--output", str(tmp_path / "o")]
    assert demo.main(["--model-folder", str(tmp_path / "nope"), *args]) == 2
    assert capsys.readouterr().err.strip() == (
        f"demo.py: error: --model-folder {tmp_path / 'nope'}: no such folder."
    )
    (tmp_path / "empty").mkdir()
    assert demo.main(["--model-folder", str(tmp_path / "empty"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search("holds no config.yaml", err)


def test_make_model_folder_from_a_checkpoint_gives_the_same_folder(run, tmp_path, capsys):
    tool = load_script("tools/make_model_folder.py", "clipzss_make_model_folder")
    out = tmp_path / "packaged"
    # the config detectron2 saved with the run, and one of its checkpoints
    argv = ["--config-file", str(run["out"] / "config.yaml"), "--output", str(out)]
    argv += ["MODEL.WEIGHTS", str(run["out"] / "model_final.pth")]
    assert tool.main(argv) == 0, capsys.readouterr()
    trained = run["out"] / "model"
    assert yaml.safe_load((out / "config.yaml").read_text()) == yaml.safe_load(
        (trained / "config.yaml").read_text()
    )
    a = torch.load(out / "model.pth", weights_only=True)["model"]
    b = torch.load(trained / "model.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    names = sorted(p.name for p in (trained / "text_cache").iterdir())
    assert sorted(p.name for p in (out / "text_cache").iterdir()) == names
    for name in names:  # recomputed from the CLIP weights file: the same embeddings
        with (
            safe_open(str(out / "text_cache" / name), "pt") as f,
            safe_open(str(trained / "text_cache" / name), "pt") as g,
        ):
            torch.testing.assert_close(f.get_tensor("embeddings"), g.get_tensor("embeddings"))
    card = (out / "MODEL_CARD.md").read_text()
    assert "iterations: 4" in card and "No evaluation results" in card
    assert "model_final.pth" in card
    # the packaged folder predicts like the trained one
    img = photos(run)[1]
    p, q = (
        OpenVocabularyPredictor.from_folder(str(out)),
        OpenVocabularyPredictor.from_folder(str(trained)),
    )
    np.testing.assert_array_equal(p(img).scores, q(img).scores)


# -- writing is all or nothing --------------------------------------------------------------------
def test_interrupted_write_leaves_the_previous_folder(tmp_path, monkeypatch):
    from clipzss_d2 import model_folder
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(extra_opts=["DATASETS.TEST", ()])
    cfg.MODEL.CLIPZSS.TEST_VOCABULARY = ["cat", "dog"]
    model = build_model(cfg)
    target = tmp_path / "model"
    model_folder.write_model_folder(cfg, model, str(target), iteration=1)
    before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C during the card, the last file written

    monkeypatch.setattr(model_folder, "model_card", killed)
    with torch.no_grad():
        model.log_logit_scale.fill_(1.0)  # a folder written now would differ
    with pytest.raises(KeyboardInterrupt):
        model_folder.write_model_folder(cfg, model, str(target), iteration=2)
    assert {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    monkeypatch.undo()
    model_folder.write_model_folder(cfg, model, str(target), iteration=2)  # replaces it whole
    saved = torch.load(target / "model.pth", weights_only=True)["model"]
    assert (
        float(saved["log_logit_scale"]) == 1.0
        and "iterations: 2" in (target / "MODEL_CARD.md").read_text()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
