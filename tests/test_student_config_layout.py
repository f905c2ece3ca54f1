"""configs/miniworld/students/segformer-b0.yaml cannot take the shipped student by _BASE_ (it is a
delta merged after a miniworld variant; a _BASE_ would bring Base-CLIPZSS.yaml back over the
variant), so it repeats the network lines: check they are the shipped student's, at this world's
width and with BatchNorm."""

from clipzss_d2 import get_clipzss_cfg
from tests.helpers import CONFIGS

NETWORK = ("MODEL.BACKBONE.", "MODEL.TIMM.", "MODEL.CLIPZSS.MLP_HEAD.", "MODEL.CLIPZSS.HEAD_NAME")


def _network(*files):
    cfg = get_clipzss_cfg()
    for f in files:
        cfg.merge_from_file(str(CONFIGS / f))
    flat = {}

    def walk(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif f"{prefix}{key}".startswith(NETWORK):
                flat[f"{prefix}{key}"] = value

    walk(cfg)
    return flat


def test_miniworld_student_is_the_shipped_student_at_the_worlds_width():
    shipped = _network("students/segformer-b0.yaml")
    mini = _network("miniworld/full.yaml", "miniworld/students/segformer-b0.yaml")
    differ = {k: (shipped[k], mini[k]) for k in shipped if shipped[k] != mini[k]}
    assert set(differ) == {"MODEL.CLIPZSS.MLP_HEAD.CHANNELS", "MODEL.CLIPZSS.MLP_HEAD.NORM"}
    assert mini["MODEL.CLIPZSS.MLP_HEAD.CHANNELS"] == 64
    assert mini["MODEL.CLIPZSS.MLP_HEAD.NORM"] == "BN"
