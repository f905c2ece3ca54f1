"""The deployable path (predictor, demo, the export tool and clipzss_d2.export) builds and
imports the student alone: no CLIP teacher, GLM, PLM or criterion, and not the miniature world's
CLIP trainer. `import clipzss_d2` registers and nothing more: no trainer, no warnings filters.
Checked in a fresh interpreter, since pytest itself imports everything."""

import json
import subprocess
import sys

import torch
from detectron2.modeling import build_model

from tests.helpers import ROOT, tiny_cfg

# the training-only package: teacher, GLM, PLM, criterion and their builder
TRAINING_ONLY = "clipzss_d2.modeling.training"
# the miniature world's CLIP trainer and the open_clip training machinery it pulls in
MINIWORLD_TRAINING = [
    "clipzss_d2.miniworld.train_teacher",
    "clipzss_d2.miniworld.teacher_data",
    "clipzss_d2.miniworld.teacher_eval",
    "clipzss_d2.miniworld.teacher_config",
    "clipzss_d2.miniworld.captions",
]

PROBE = """
import importlib.util, json, sys
import warnings
import numpy as np
filters = list(warnings.filters)
import clipzss_d2
after_import = {"filters_unchanged": warnings.filters == filters,
                "trainer": [m for m in MINIWORLD_TRAINING if m in sys.modules]}
import clipzss_d2.export
from clipzss_d2 import OpenVocabularyPredictor
from tests.helpers import ROOT, tiny_cfg

for name in ("demo/demo.py", "tools/export_model.py"):  # the entry points' own imports
    spec = importlib.util.spec_from_file_location(name.replace("/", "_")[:-3], name)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
predictor = OpenVocabularyPredictor(tiny_cfg(), vocabulary="cat,sofa|couch")
result = predictor(np.zeros((40, 48, 3), dtype=np.uint8))
clipzss_d2.export.FixedVocabularySegmenter(predictor.model, ["cat", "sofa|couch"])
modules = sorted(m for m in sys.modules if m.split(".")[:3] == TRAINING_ONLY.split("."))
modules += [m for m in MINIWORLD_TRAINING if m in sys.modules]
print(json.dumps({"shape": list(result.labels.shape), "modules": modules, **after_import,
                  "plm": predictor.model.plm is None, "glm": predictor.model.glm is None}))
"""


def test_predictor_demo_and_export_import_no_training_code():
    code = f"TRAINING_ONLY = {TRAINING_ONLY!r}\nMINIWORLD_TRAINING = {MINIWORLD_TRAINING!r}\n"
    code += PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [40, 48]
    assert out["modules"] == []
    assert out["trainer"] == [], "import clipzss_d2 loaded the miniature world's trainer"
    assert out["filters_unchanged"], "import clipzss_d2 changed the warnings filters"
    assert out["plm"] and out["glm"]


def test_training_builds_the_training_modules_and_student_only_refuses_to_train():
    cfg = tiny_cfg()
    assert not cfg.MODEL.CLIPZSS.STUDENT_ONLY
    model = build_model(cfg)
    assert model.glm is not None and model.plm is not None and model.criterion is not None
    cfg.MODEL.CLIPZSS.STUDENT_ONLY = True
    student = build_model(cfg)
    assert student.glm is None and student.plm is None and not student.needs_teacher
    # same student parameters either way, so a training checkpoint loads into it
    student_keys = set(student.state_dict())
    assert student_keys == {k for k in model.state_dict() if not k.startswith(("plm.", "glm."))}
    student.train()
    batch = [{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "sem_seg": torch.zeros(32, 32)}]
    try:
        student(batch)
    except ValueError as e:
        assert "STUDENT_ONLY" in str(e)
    else:
        raise AssertionError("a student-only model must refuse to compute losses")


def test_miniworld_trainer_names_load_on_first_use():
    """The package's public names for the trainer still work, importing it only when used."""
    code = (
        "import sys, clipzss_d2.miniworld as M\n"
        "assert 'clipzss_d2.miniworld.train_teacher' not in sys.modules\n"
        "from clipzss_d2.miniworld import DEFAULT_TEACHER_PATH, TeacherConfig\n"
        "assert 'clipzss_d2.miniworld.train_teacher' not in sys.modules\n"
        "from clipzss_d2.miniworld.train_teacher import get_miniworld_teacher as g\n"
        "assert M.get_miniworld_teacher is g and TeacherConfig().steps > 0\n"
        "assert DEFAULT_TEACHER_PATH.endswith('.pt') and 'get_miniworld_teacher' in dir(M)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
