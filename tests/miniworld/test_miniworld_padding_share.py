"""MiniWorld's training crops are padded about as often and as much as VOC's.

configs/miniworld scales VOC's protocol (512 px crops of images resized to a short side of
256..1024) to its 96 px crops, and the world's images have VOC-like sizes, so the share of each
training crop that is padding (outside the mapper's `image_size`) must be VOC-like: that padding
is where PLM, GLM and the teacher must not look (tests/data/test_padding.py). Both shares are
measured with the real training mapper on real files: a small generated world, and the VOC
samples in the shared data.
"""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from clipzss_d2 import get_clipzss_cfg
from clipzss_d2.data import ZeroShotSemSegDatasetMapper
from clipzss_d2.miniworld import generate_world, register_miniworld
from tests.helpers import CONFIGS

DRAWS = 100  # per dataset; about 5 s for both


def padding_shares(config: str, dataset: str, draws: int) -> np.ndarray:
    """The padded fraction of each of `draws` training crops (records taken in turn)."""
    cfg = get_clipzss_cfg()
    cfg.merge_from_file(str(CONFIGS / config))
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)
    records = DatasetCatalog.get(dataset)
    np.random.seed(0)  # noqa: NPY002  (detectron2's augmentations draw from numpy's generator)
    shares = []
    for i in range(draws):
        out = mapper(records[i % len(records)])
        h, w = out["image_size"]
        crop_h, crop_w = out["image"].shape[1:]
        assert out["sem_seg"].shape == (crop_h, crop_w)
        # the padding is ignore in the labels (the image part may hold ignore too: void, unseen)
        assert (out["sem_seg"][h:] == 255).all() and (out["sem_seg"][:, w:] == 255).all()
        shares.append(1 - h * w / (crop_h * crop_w))
    return np.array(shares)


@pytest.fixture(scope="module")
def miniworld_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mw") / "miniworld")
    generate_world(root, seed=0, counts={"train": 40, "tune": 0, "test": 0}, workers=1)
    register_miniworld(root)
    yield root
    register_miniworld()  # the default root again, as the other tests expect


def test_miniworld_crops_are_padded_like_vocs(miniworld_root, prepared_root):
    mini = padding_shares("miniworld/full.yaml", "miniworld_train", DRAWS)
    voc = padding_shares("voc.yaml", "voc20_zs_train", DRAWS)
    print(
        f"\npadded share of a training crop: miniworld {100 * mini.mean():.1f} % "
        f"({100 * (mini > 0).mean():.0f} % of crops padded), "
        f"VOC {100 * voc.mean():.1f} % ({100 * (voc > 0).mean():.0f} % of crops padded)"
    )
    for name, shares in (("miniworld", mini), ("VOC", voc)):
        assert 0.05 <= shares.mean() <= 0.30, (name, shares.mean())
        assert 0.1 <= (shares > 0).mean() <= 0.6, (name, (shares > 0).mean())  # some, not all
    assert 0.5 <= mini.mean() / voc.mean() <= 2.0, (mini.mean(), voc.mean())
