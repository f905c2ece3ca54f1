"""Weights files cannot run code (demo, train_net --eval-only, predictor), real model-zoo .pkl
files still load, and an interrupted checkpoint write never leaves a broken last_checkpoint."""

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from clipzss_d2.checkpoint import (
    CheckpointFormatError,
    IncompatibleWeightsError,
    SafeCheckpointer,
    UnsafeCheckpointError,
)
from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import ROOT, TINY_MODEL_OPTS, tiny_cfg

VOCAB = ["sky", "tree", "person"]


class RunsCommand:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny student, its config file and its weights as .pth and as a model-zoo .pkl."""
    folder = tmp_path_factory.mktemp("safe")
    cfg = tiny_cfg(
        extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", (), "INPUT.MIN_SIZE_TEST", 64]
    )
    cfg.MODEL.CLIPZSS.TEST_VOCABULARY = VOCAB
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    SafeCheckpointer(model, save_dir=str(folder)).save("model")
    zoo = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "a test"}
    with open(folder / "model_zoo.pkl", "wb") as f:
        pickle.dump(zoo, f, protocol=2)  # detectron2's zoo files are protocol-2 pickles
    (folder / "config.yaml").write_text(cfg.dump())
    return folder, cfg, state


def hostile_files(folder: Path, marker: Path) -> dict[str, Path]:
    weights = {"w": np.zeros(3, np.float32)}
    files = {
        "pkl": folder / "evil.pkl",
        "pth": folder / "evil.pth",
        "pth_callable": folder / "callable.pth",
    }
    with open(files["pkl"], "wb") as f:
        pickle.dump({"model": weights, "__author__": RunsCommand(marker)}, f, protocol=2)
    torch.save({"model": {"w": torch.zeros(3)}, "extra": RunsCommand(marker)}, files["pth"])
    torch.save({"model": {"w": torch.zeros(3)}, "hook": os.system}, files["pth_callable"])
    return files


def test_model_zoo_pkl_loads_the_same_tensors(tiny):
    folder, cfg, state = tiny
    model = build_model(cfg)
    SafeCheckpointer(model).load(str(folder / "model_zoo.pkl"), checkpointables=[])
    loaded = model.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    # the same file through the predictor, as `demo.py --opts MODEL.WEIGHTS x.pkl` uses it
    # (seeded: the tiny CLIP text tower that encodes the vocabulary is random)
    scores = []
    for name in ("model_zoo.pkl", "model.pth"):
        c = cfg.clone()
        c.MODEL.WEIGHTS = str(folder / name)
        torch.manual_seed(1)
        predictor = OpenVocabularyPredictor(c, VOCAB)
        image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        scores.append(predictor(image).scores)
    assert np.array_equal(scores[0], scores[1])


def test_hostile_files_are_refused_in_process(tiny, tmp_path):
    marker = tmp_path / "marker"
    files = hostile_files(tmp_path, marker)
    model = build_model(tiny[1])
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*asks to load posix\.system"):
        SafeCheckpointer(model).load(str(files["pkl"]))
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*could run code"):
        SafeCheckpointer(model).load(str(files["pth"]))
    with pytest.raises(UnsafeCheckpointError, match=r"callable\.pth.*posix\.system"):
        SafeCheckpointer(model).load(str(files["pth_callable"]))
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ([1, 2, 3], "does not hold model weights \\(a list\\)"),
        ({"model": "weights"}, "'model' entry is a str"),
        ({"model": {"w": "not a tensor"}}, "entry 'w' of its 'model' dict is a str"),
    ],
)
def test_files_without_a_checkpoint_structure_are_refused(tiny, tmp_path, content, message):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointFormatError, match=message):
        SafeCheckpointer(build_model(tiny[1])).load(str(path))
    # the predictor reports it as weights that do not fit, in one line
    cfg = tiny[1].clone()
    cfg.MODEL.WEIGHTS = str(path)
    with pytest.raises(IncompatibleWeightsError, match=message) as e:
        OpenVocabularyPredictor(cfg, VOCAB)
    assert "\n" not in str(e.value)


def test_truncated_pkl_and_pth_are_one_line_errors(tiny, tmp_path):
    model = build_model(tiny[1])
    good = (tiny[0] / "model.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "cut.pkl").write_bytes((tiny[0] / "model_zoo.pkl").read_bytes()[:1000])
    for name in ("cut.pth", "cut.pkl"):
        with pytest.raises(CheckpointFormatError, match=f"{name} could not be read") as e:
            SafeCheckpointer(model).load(str(tmp_path / name))
        assert "\n" not in str(e.value)


def run_script(args, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def assert_refused(proc, name, marker):
    # torch's own C++ start-up notes ("W1129 22:41:22 ... No CUDA runtime is found") are glog
    # lines from collect_env on machines with CUDA_HOME set; everything else must be our line
    lines = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not re.match(r"[IW]\d{4} \d\d:\d\d:\d\d", line)
    ]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) == 1 and name in lines[0] and "could run code" in lines[0], proc.stderr
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pkl", "pth", "pth_callable"])
def test_hostile_weights_through_demo_and_train_net(tiny, tmp_path, kind):
    folder, _, _ = tiny
    marker = tmp_path / "marker"
    path = hostile_files(tmp_path, marker)[kind]
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), np.full((32, 32, 3), 128, np.uint8))
    out = tmp_path / "out"
    demo = [str(ROOT / "demo/demo.py"), "--config-file", str(folder / "config.yaml")]
    proc = run_script(
        [*demo, "--input", str(image), "--output", str(out), "--opts", "MODEL.WEIGHTS", str(path)],
        tmp_path,
    )
    assert_refused(proc, path.name, marker)
    assert not out.exists()

    train = [str(ROOT / "train_net.py"), "--config-file", str(ROOT / "configs/voc.yaml")]
    opts = [str(o) for o in TINY_MODEL_OPTS] + ["OUTPUT_DIR", str(tmp_path / "eval")]
    proc = run_script([*train, "--eval-only", *opts, "MODEL.WEIGHTS", str(path)], tmp_path)
    assert_refused(proc, path.name, marker)


DEEP_PICKLES = """
import io, sys, zipfile
import torch
from detectron2.modeling import build_model
from clipzss_d2.checkpoint import SafeCheckpointer, read_weights_file
from clipzss_d2.errors import UserInputError
from tests.helpers import ROOT, tiny_cfg

DEPTH = 200_000
def deep(kind):  # protocol-2 opcodes only, no recursion when writing
    if kind == "tuple":
        return b"N" + b"\\x85" * DEPTH  # NONE, then TUPLE1 over and over
    if kind == "list":
        return b"]" * DEPTH + b"a" * (DEPTH - 1)  # EMPTY_LIST..., APPEND...
    return b"}X\\x01\\x00\\x00\\x00k" * DEPTH + b"N" + b"s" * DEPTH  # {"k": {"k": ...}}
def wrapped(body):  # {"model": {"w": body}}
    return b"}X\\x05\\x00\\x00\\x00model}X\\x01\\x00\\x00\\x00w" + body + b"ss"
model = build_model(tiny_cfg(extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", ()]))
for kind in ("tuple", "list", "dict"):
    for wrap in (False, True):
        data = b"\\x80\\x02" + (wrapped(deep(kind)) if wrap else deep(kind)) + b"."
        for ext in ("pkl", "pth"):
            path = f"{sys.argv[1]}/deep_{kind}_{wrap}.{ext}"
            if ext == "pkl":
                open(path, "wb").write(data)
            else:  # torch.save's zip layout
                with zipfile.ZipFile(path, "w") as z:
                    z.writestr("archive/data.pkl", data)
                    z.writestr("archive/version", "3\\n")
                    z.writestr("archive/byteorder", "little")
            for load in (lambda: SafeCheckpointer(model).load(path), lambda: read_weights_file(path)):
                try:
                    load()
                    print("loaded", path)
                except UserInputError as e:
                    assert "\\n" not in str(e)
                    print("refused", type(e).__name__, path)
"""


def test_deeply_nested_pickles_are_refused_in_one_line_not_a_crash(tmp_path):
    """200,000 levels of tuples, lists or dicts (only allowed opcodes), bare or inside
    {"model": ...}, as .pkl and as torch.save zip: both safe loaders answer in one line; a crash
    of the interpreter (SIGSEGV, exit 139) fails this test, which runs them in a subprocess."""
    proc = run_script(["-c", DEEP_PICKLES, str(tmp_path)], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = proc.stdout.splitlines()
    assert len(results) == 24 and all(r.startswith("refused ") for r in results), results


# -- atomic saves ---------------------------------------------------------------------------------
def test_interrupted_save_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    model = build_model(tiny[1])
    checkpointer = SafeCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    first = (tmp_path / "model_0000001.pth").read_bytes()

    real_save = torch.save

    def dies_half_way(obj, f, *a, **kw):
        real_save({"model": {"partial": torch.zeros(1)}}, f)  # some bytes reach the file
        raise KeyboardInterrupt  # e.g. the job is cancelled, or the disk fills up

    monkeypatch.setattr(torch, "save", dies_half_way)
    for name in ("model_0000003", "model_0000001"):  # a new file, and over an existing one
        with pytest.raises(KeyboardInterrupt):
            checkpointer.save(name, iteration=3)
    monkeypatch.setattr(torch, "save", real_save)

    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    assert (tmp_path / "model_0000001.pth").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    resumed = SafeCheckpointer(build_model(tiny[1]), save_dir=str(tmp_path))
    assert resumed.resume_or_load("", resume=True)["iteration"] == 1
