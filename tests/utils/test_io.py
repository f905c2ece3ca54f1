import os
import stat

import pytest

from clipzss_d2.utils.io import atomic_write_path, atomic_write_text


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(RuntimeError), atomic_write_path(target) as tmp:
        assert tmp.endswith(".png")
        open(tmp, "wb").write(b"partial")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_result_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_dataset_root_expands_home_everywhere(monkeypatch, tmp_path):
    """$DETECTRON2_DATASETS=~/... is one root for the datasets, the prepare scripts and the
    miniature world (one owner: clipzss_d2.utils.io.datasets_root)."""
    from clipzss_d2.data import datasets
    from clipzss_d2.data.prepare import common
    from clipzss_d2.miniworld import generate
    from clipzss_d2.utils.io import datasets_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CLIPZSS_MINIWORLD_ROOT", raising=False)
    monkeypatch.setenv("DETECTRON2_DATASETS", "~/data")
    expected = str(tmp_path / "data")
    assert datasets_root() == expected
    assert datasets.default_root() == common.default_root() == expected
    assert generate.default_root() == os.path.join(expected, "miniworld")
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert datasets_root() == "datasets"
