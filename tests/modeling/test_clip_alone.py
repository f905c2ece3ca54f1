"""CLIP alone (MODEL.META_ARCHITECTURE CLIPAlone): the predictor equals dense CLIP written here from
open_clip's public modules (plain and MaskCLIP tokens, native and interpolated token grids), the
benchmark's CLIP-in-the-loop competitor gives its labels, and every route that could pass it for
a trained student (train_net training, export, model folders) refuses it in one line while
evaluation labels it.

The weights are a random tiny CLIP saved as a state-dict file (its logit scale set to OpenAI's
100), so the config route, the test's own open_clip model and the benchmark's model share them.
"""

import copy
import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipzss_d2.errors import UserInputError
from clipzss_d2.modeling import CLIPAlone
from clipzss_d2.modeling.open_vocabulary import CLIP_ALONE, STUDENT
from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import ROOT, TINY_CLIP, TINY_MODEL_OPTS, load_script, tiny_cfg

VOCABULARY = ["red square", "grass|lawn", "blue sky", "yellow car", "wall"]
TEMPLATE = "a photo of a {}."  # MODEL.CLIPZSS.TEXT.TEMPLATES single: CLIP's one prompt
CLIP_SCALE = 100.0  # OpenAI's trained logit scale, written into the file


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """(weights file, the open_clip model holding them)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = open_clip.create_model(TINY_CLIP).eval()  # GELU, as the file is read below
    with torch.no_grad():
        model.logit_scale.fill_(math.log(CLIP_SCALE))
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return str(path), model


def clip_alone_opts(path, dense_mode="plain"):
    return [
        "MODEL.META_ARCHITECTURE", "CLIPAlone",
        "MODEL.CLIPZSS.CLIP.PRETRAINED", path,
        "MODEL.CLIPZSS.CLIP.ACTIVATION", "gelu",
        "MODEL.CLIPZSS.TEXT.TEMPLATES", "single",
        "MODEL.CLIPZSS.TEACHER.DENSE_MODE", dense_mode,
        "MODEL.CLIPZSS.TEACHER.INPUT_SIZE", 0,
        "INPUT.MIN_SIZE_TEST", 0,  # no test resize: the image reaches CLIP as given
    ]  # fmt: skip


def predictor_for(path, dense_mode="plain"):
    return OpenVocabularyPredictor(tiny_cfg(extra_opts=clip_alone_opts(path, dense_mode)))


# -- dense CLIP, written from open_clip's modules -----------------------------------------------
@torch.no_grad()
def text_embeddings(model, entries):
    """Per entry: each synonym's prompt embedded and normalised, synonyms averaged and
    normalised again (one template, so no template average)."""
    tokenizer = open_clip.get_tokenizer(TINY_CLIP)
    rows = []
    for entry in entries:
        synonyms = [name.strip() for name in entry.split("|")]
        emb = F.normalize(
            model.encode_text(tokenizer([TEMPLATE.format(s) for s in synonyms])), dim=-1
        )
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def dense_clip(model, image_rgb: np.ndarray, entries, dense_mode: str):
    """(labels, scores) at the image's size: ViT tokens -> ln_post -> proj per patch, cosine x
    CLIP's scale with the text, bilinear upsampling, argmax and softmax."""
    vis = model.visual
    pp = open_clip.get_model_preprocess_cfg(model)
    x = torch.from_numpy(image_rgb).permute(2, 0, 1)[None].float() / 255
    x = (x - torch.tensor(pp["mean"]).view(1, 3, 1, 1)) / torch.tensor(pp["std"]).view(1, 3, 1, 1)
    x = vis.conv1(x)
    _, width, gh, gw = x.shape
    tokens = torch.cat([vis.class_embedding.view(1, 1, width), x.flatten(2).transpose(1, 2)], 1)
    pos = vis.positional_embedding
    if (gh, gw) != tuple(vis.grid_size):  # the native grid's embeddings, resized bicubically
        n0, m0 = vis.grid_size
        grid = pos[1:].reshape(1, n0, m0, width).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, width)])
    tokens = vis.ln_pre(tokens + pos)
    assert vis.transformer.batch_first
    blocks = vis.transformer.resblocks
    for block in blocks[:-1]:
        tokens = block(tokens)
    last = blocks[-1]
    if dense_mode == "plain":
        tokens = last(tokens)
    else:  # MaskCLIP: the last block's value path, no query-key attention, residuals kept
        attn = last.attn
        w_v = attn.in_proj_weight[2 * width :]
        b_v = attn.in_proj_bias[2 * width :]
        values = attn.out_proj(last.ln_1(tokens) @ w_v.t() + b_v)
        tokens = tokens + last.ls_1(values)
        tokens = tokens + last.ls_2(last.mlp(last.ln_2(tokens)))
    patches = F.normalize(vis.ln_post(tokens[:, 1:]) @ vis.proj, dim=-1)
    logits = model.logit_scale.exp() * patches @ text_embeddings(model, entries).t()
    logits = logits.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
    logits = F.interpolate(logits, size=image_rgb.shape[:2], mode="bilinear", align_corners=False)
    probabilities = logits[0].softmax(0)
    return probabilities.argmax(0).numpy(), probabilities.max(0).values.numpy()


def image(h, w, seed=0):
    """Smooth colour blobs (not noise), so labels form regions."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    big = F.interpolate(
        torch.from_numpy(small).permute(2, 0, 1)[None], size=(h, w), mode="bilinear"
    )[0]
    return big.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


# 32 x 32: the tiny CLIP's native 4 x 4 grid (no interpolation); 48 x 40: a 6 x 5 grid, the
# positional embeddings resized bicubically
@pytest.mark.parametrize("dense_mode", ["plain", "maskclip"])
@pytest.mark.parametrize("size", [(32, 32), (48, 40)])
def test_predictor_equals_dense_clip_from_open_clip(clip_file, dense_mode, size):
    path, model = clip_file
    predictor = predictor_for(path, dense_mode)
    assert isinstance(predictor.model, CLIPAlone)
    assert predictor.model.logit_scale == pytest.approx(CLIP_SCALE)
    img = image(*size, seed=sum(size))
    result = predictor(img, vocabulary=VOCABULARY, input_format="RGB")
    labels, scores = dense_clip(model, img, VOCABULARY, dense_mode)
    assert result.segmenter == CLIP_ALONE
    assert len(np.unique(labels)) > 1  # a real comparison, not one class everywhere
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-4, atol=1e-5)


def test_dense_modes_differ(clip_file):
    """The two modes are told apart by the comparison above (random weights make them differ)."""
    path, model = clip_file
    img = image(48, 40, seed=1)
    plain = dense_clip(model, img, VOCABULARY, "plain")[1]
    assert np.abs(plain - dense_clip(model, img, VOCABULARY, "maskclip")[1]).max() > 1e-3


def test_no_student_no_weights_and_labelled(clip_file, caplog):
    """No student module is built and MODEL.WEIGHTS (here a missing file) is never read; the
    classmethod route gives the same predictor; a student's results say "student"."""
    path, _ = clip_file
    opts = clip_alone_opts(path) + ["MODEL.WEIGHTS", "/nonexistent/model_final.pth"]
    with caplog.at_level(logging.WARNING, logger="clipzss_d2"):
        predictor = OpenVocabularyPredictor(tiny_cfg(extra_opts=opts))
    assert "no student): MODEL.WEIGHTS is not used" in caplog.text
    names = {name.split(".")[0] for name, _ in predictor.model.named_parameters()}
    assert names == {"teacher"}
    assert predictor.segmenter == CLIP_ALONE

    config = ROOT / "configs" / "Base-CLIPZSS.yaml"
    other = OpenVocabularyPredictor.clip_alone(
        str(config), [str(o) for o in TINY_MODEL_OPTS] + [str(o) for o in clip_alone_opts(path)]
    )
    img = image(32, 32)
    np.testing.assert_array_equal(
        other(img, VOCABULARY, "RGB").labels, predictor(img, VOCABULARY, "RGB").labels
    )
    student = OpenVocabularyPredictor(tiny_cfg())
    assert student(img, VOCABULARY, "RGB").segmenter == STUDENT


def test_cannot_train(clip_file):
    model = predictor_for(clip_file[0]).model
    model.train()
    batch = [{"image": torch.zeros(3, 32, 32), "sem_seg": torch.zeros(32, 32, dtype=torch.long)}]
    with pytest.raises(UserInputError, match="nothing to train"):
        model(batch)


# -- the benchmark's competitor --------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 48])
def test_benchmark_clip_in_the_loop_gives_the_same_labels(clip_file, monkeypatch, size):
    """tools/benchmarking/baseline.py's CLIPInTheLoop, built on the same weights, text and
    scale, labels every pixel as the CLIP-alone predictor does: one computation."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # what running a command in tools/ gives
    from benchmarking import baseline as bench

    path, model = clip_file
    predictor = predictor_for(path)
    text = predictor.model.text_embeddings(VOCABULARY)
    # the competitor builds its CLIP with open_clip.create_model(name): these weights instead
    monkeypatch.setattr(bench.open_clip, "create_model", lambda name: copy.deepcopy(model))
    competitor = bench.CLIPInTheLoop(TINY_CLIP, size, text, predictor.model.logit_scale).eval()
    img = image(size, size, seed=size)
    with torch.inference_mode():
        labels = competitor(torch.from_numpy(img).permute(2, 0, 1)[None].float())[0].numpy()
    expected = predictor(img, VOCABULARY, "RGB").labels
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels, expected)


# -- evaluation labels it; training, export and model folders refuse it --------------------------
def test_eval_route_reads_no_weights_and_labels_results(clip_file, tmp_path, caplog):
    from clipzss_d2.evaluation import build_eval_student, build_gzss_evaluator

    cfg = tiny_cfg(extra_opts=clip_alone_opts(clip_file[0]) + ["MODEL.WEIGHTS", "/no/such.pth"])
    with caplog.at_level(logging.WARNING, logger="clipzss_d2"):
        model = build_eval_student(cfg)
    assert isinstance(model, CLIPAlone)
    assert "CLIP alone (teacher's dense patch tokens x text embeddings; no student): " in (
        caplog.text
    )
    evaluator = build_gzss_evaluator(cfg, cfg.DATASETS.TEST[0], str(tmp_path), distributed=False)
    evaluator.reset()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clipzss_d2"):
        evaluator.evaluate()
    assert "these results are CLIP alone (no student)'s, not a trained student's" in caplog.text
    written = json.loads((tmp_path / "gzss_per_class_iou.json").read_text())
    assert written["segmenter"] == CLIP_ALONE
    student = build_gzss_evaluator(tiny_cfg(), cfg.DATASETS.TEST[0], str(tmp_path / "s"), False)
    student.reset()
    student.evaluate()
    assert "segmenter" not in json.loads((tmp_path / "s" / "gzss_per_class_iou.json").read_text())


def config_file(tmp_path, path):
    cfg = tiny_cfg(extra_opts=clip_alone_opts(path) + ["DATASETS.TRAIN", (), "DATASETS.TEST", ()])
    file = tmp_path / "clip_alone.yaml"
    file.write_text(cfg.dump())
    return str(file)


def test_export_refuses_in_one_line(clip_file, tmp_path, capsys):
    export = load_script("tools/export_model.py")
    out = tmp_path / "exported"
    code = export.main(
        ["--config-file", config_file(tmp_path, clip_file[0]), "--vocab", "a,b", "--output",
         str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "CLIP alone is no trained student, there is nothing to export" in err
    assert not out.exists() or not any(out.iterdir())


def test_model_folder_refuses_in_one_line(clip_file, tmp_path, capsys):
    from clipzss_d2.model_folder import write_model_folder

    tool = load_script("tools/make_model_folder.py")
    out = tmp_path / "folder"
    code = tool.main(
        ["--config-file", config_file(tmp_path, clip_file[0]), "--output", str(out),
         "MODEL.WEIGHTS", str(tmp_path / "model.pth")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "a model folder packages a trained student" in err and not out.exists()

    cfg = tiny_cfg(extra_opts=clip_alone_opts(clip_file[0]))
    with pytest.raises(UserInputError, match="a model folder packages a trained student only"):
        write_model_folder(cfg, predictor_for(clip_file[0]).model, str(out))
    assert not out.exists()


# -- train_net.py ---------------------------------------------------------------------------------
def train_net(args, tmp_path):
    opts = [str(o) for o in TINY_MODEL_OPTS] + ["OUTPUT_DIR", str(tmp_path / "out")]
    opts += ["DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TEST", "32"]
    proc = subprocess.run(
        [
            sys.executable,
            "train_net.py",
            "--config-file",
            "configs/Base-CLIPZSS.yaml",
            *args,
            *opts,
        ],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_net_evaluates_clip_alone_and_refuses_to_train_it(clip_file, tmp_path):
    from tests.data.test_custom_dataset import write_dataset_file

    dataset = write_dataset_file(tmp_path, "coco")
    opts = [str(o) for o in clip_alone_opts(clip_file[0])] + [
        "DATASETS.CUSTOM", f"['{dataset}']", "DATASETS.TEST", "('farm_val',)",
        "MODEL.WEIGHTS", str(tmp_path / "no_such_student.pth"),
    ]  # fmt: skip
    proc, log = train_net(["--eval-only", *opts], tmp_path)
    assert proc.returncode == 0, log[-5000:]
    assert "no student): MODEL.WEIGHTS is not used" in log
    assert "Generalized zero-shot evaluation of farm_val" in log
    assert "these results are CLIP alone (no student)'s, not a trained student's" in log
    assert "The results above are CLIP alone" in log
    per_class = tmp_path / "out" / "inference" / "farm_val" / "gzss_per_class_iou.json"
    assert json.loads(per_class.read_text())["segmenter"] == CLIP_ALONE

    proc, log = train_net(["DATASETS.TRAIN", "('farm_train',)", *opts], tmp_path)
    assert proc.returncode == 2, log[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "train_net.py: error: MODEL.META_ARCHITECTURE is CLIPAlone: CLIP alone is no trained "
        "student, there is nothing to train: evaluate it with --eval-only."
    ]
