import pytest

from clipzss_d2.utils.weights import WeightsUnavailableError, resolve_model_weights


def test_empty_means_random_init():
    assert resolve_model_weights("") == ""


def test_missing_local_file_is_explained(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_model_weights(str(tmp_path / "nope.pth"))
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert resolve_model_weights(str(f)) == str(f)


def test_unreachable_url_is_explained(monkeypatch):
    from detectron2.utils import file_io

    def fail(path, **kw):
        raise OSError("Name or service not known")

    monkeypatch.setattr(file_io.PathManager, "get_local_path", fail)
    with pytest.raises(WeightsUnavailableError, match="could not be downloaded.*local file"):
        resolve_model_weights("detectron2://DeepLab/R-103.pkl")
