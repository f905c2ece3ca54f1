"""tools/export_model.py (clipzss_d2.export): TorchScript and ONNX artefacts reproduce PyTorch and hold no CLIP."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import open_clip
import pytest
import torch
from onnx import numpy_helper

from clipzss_d2.export import check_no_clip, compare
from clipzss_d2.predictor import OpenVocabularyPredictor
from tests.helpers import TINY_CLIP, load_script, save_tiny_checkpoint, tiny_cfg

VOCAB = "cat,dog,sofa|couch,grass"
CLIP_MARKERS = ("token_embedding", "transformer", "visual", "text_projection", "ln_final")


tool = load_script("tools/export_model.py", "clipzss_export_tool")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    cfg = tiny_cfg(extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", ()])
    save_tiny_checkpoint(folder, cfg)
    # The tiny CLIP is random at every build: the tool and the reference share embeddings
    # through the on-disk text cache, as a deployment would.
    opts = ["MODEL.WEIGHTS", str(folder / "model.pth")]
    opts += ["MODEL.CLIPZSS.TEXT.CACHE_DIR", str(folder / "text_cache")]
    return folder, opts


def reference(folder, opts, images: torch.Tensor) -> torch.Tensor:
    """Logits of the PyTorch model on the same input, through CLIPZSS.forward."""
    cfg = tiny_cfg(extra_opts=["DATASETS.TRAIN", (), "DATASETS.TEST", ()] + opts)
    predictor = OpenVocabularyPredictor(cfg, VOCAB)
    assert not predictor.model.text_classifier.clip_loaded  # embeddings came from the cache
    predictor.model.set_vocabulary(VOCAB)
    with torch.no_grad():
        return torch.stack([o["sem_seg"] for o in predictor.model([{"image": x} for x in images])])


def test_dynamic_export_matches_pytorch_and_holds_no_clip(tiny, capsys):
    folder, opts = tiny
    out = folder / "dynamic"
    argv = ["--config-file", str(folder / "config.yaml"), "--vocab", VOCAB, "--output", str(out)]
    argv += ["--dynamic", "--height", "64", "--width", "96", "--opts", *opts]
    assert tool.main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "model.ts"]
    spec = json.loads((out / "export.json").read_text())
    assert spec["onnx_exporter"] == "dynamo" and spec["input"]["channels"] == "RGB"
    assert spec["class_names"] == ["cat", "dog", "sofa", "grass"]

    images = torch.randint(0, 256, (2, 3, 41, 59), dtype=torch.uint8)  # unseen batch and size
    logits = reference(folder, opts, images.float())
    scores, labels = logits.softmax(1).max(1)

    scripted = torch.jit.load(str(out / "model.ts"))
    ts_labels, ts_scores = scripted(images)
    torch.testing.assert_close(ts_labels, labels)
    torch.testing.assert_close(ts_scores, scores, atol=1e-5, rtol=1e-5)

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_labels, onnx_scores = session.run(None, {"image": images.numpy()})
    assert (onnx_labels == labels.numpy()).mean() > 0.999
    np.testing.assert_allclose(onnx_scores, scores.numpy(), atol=1e-4)

    # Nothing of CLIP inside: only student tensors and the K x C text constant.
    clip_numel = sum(p.numel() for p in open_clip.create_model(TINY_CLIP).parameters())
    ts_state = scripted.state_dict()
    assert not [k for k in ts_state if any(m in k for m in CLIP_MARKERS)]
    assert {k.split(".")[0] for k in ts_state} == {
        "backbone",
        "embedding_head",
        "text_embeddings",
        "logit_scale",
        "pixel_mean",
        "pixel_std",
    }
    assert ts_state["text_embeddings"].shape == (4, 32)
    graph = onnx.load(str(out / "model.onnx")).graph
    names = [t.name for t in graph.initializer]
    assert not [n for n in names if any(m in n for m in CLIP_MARKERS)]
    onnx_numel = sum(numpy_helper.to_array(t).size for t in graph.initializer)
    ts_numel = sum(v.numel() for v in ts_state.values())
    assert onnx_numel <= ts_numel + 64 < clip_numel


def test_fixed_size_legacy_export_of_float_logits(tiny, capsys):
    folder, opts = tiny
    out = folder / "fixed"
    argv = ["--config-file", str(folder / "config.yaml"), "--vocab", VOCAB, "--output", str(out)]
    argv += ["--format", "onnx", "--onnx-exporter", "legacy", "--output-kind", "logits"]
    argv += ["--input-dtype", "float32", "--height", "48", "--width", "80", "--opts", *opts]
    assert tool.main(argv) == 0, capsys.readouterr().err
    model = onnx.load(str(out / "model.onnx"))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 48, 80]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    image = torch.rand(1, 3, 48, 80) * 255
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": image.numpy()})
    np.testing.assert_allclose(got, reference(folder, opts, image).numpy(), atol=1e-4, rtol=1e-4)


def test_bad_vocabulary_and_checks_fail_loudly(tiny, capsys):
    folder, opts = tiny
    argv = ["--config-file", str(folder / "config.yaml"), "--vocab", "cat,,dog"]
    assert tool.main(argv + ["--output", str(folder / "bad"), "--opts", *opts]) == 2
    assert "blank" in capsys.readouterr().err and not (folder / "bad").exists()
    # The checks the tool relies on can fail.
    with pytest.raises(AssertionError, match="not the student's"):
        check_no_clip({"backbone.w": 10, "clip.token_embedding.weight": 5}, 100, "x")
    with pytest.raises(AssertionError, match="more than the student's"):
        check_no_clip({"backbone.w": 10, "val_3": 5000}, 100, "x")
    expected = (torch.zeros(1, 4, 4, dtype=torch.int64), torch.ones(1, 4, 4))
    assert compare("x", (np.zeros((1, 4, 4)), np.ones((1, 4, 4))), expected) == []
    assert compare("x", (np.ones((1, 4, 4)), np.ones((1, 4, 4)) * 2), expected)


def test_bad_sizes_and_outputs_are_one_line_before_the_model_loads(tiny, tmp_path, capsys):
    folder, opts = tiny
    argv = [
        "--config-file",
        str(folder / "config.yaml"),
        "--vocab",
        VOCAB,
        "--format",
        "torchscript",
    ]
    for extra, fragment in (
        (["--height", "0"], "--height and --width must be positive pixel counts, got 0 x 512"),
        (["--width", "-5"], "got 512 x -5"),
    ):
        assert tool.main(argv + ["--output", str(tmp_path / "a"), *extra, "--opts", *opts]) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1
    a_file = tmp_path / "a_file"
    a_file.write_text("mine\n")
    assert tool.main(argv + ["--output", str(a_file), "--opts", *opts]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine\n" and not (tmp_path / "a").exists()


def test_an_export_replaces_only_what_an_earlier_export_wrote(tiny, tmp_path, capsys):
    """Planted files named like an export's are kept (refused in one line) unless --overwrite;
    an earlier export's own files are replaced; other files in the folder are never touched."""
    folder, opts = tiny
    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.ts").write_bytes(b"my own model")
    (out / "notes.txt").write_text("keep\n")
    argv = ["--config-file", str(folder / "config.yaml"), "--vocab", VOCAB,
            "--format", "torchscript", "--height", "64", "--width", "64", "--output", str(out)]  # fmt: skip
    assert tool.main(argv + ["--opts", *opts]) == 2
    err = capsys.readouterr().err
    assert (
        "already holds model.ts, not written by an earlier export" in err and "--overwrite" in err
    )
    assert (out / "model.ts").read_bytes() == b"my own model"
    (out / "model.ts").unlink()
    assert tool.main(argv + ["--opts", *opts]) == 0  # a first export
    first = (out / "model.ts").read_bytes()
    assert tool.main(argv + ["--opts", *opts]) == 0  # again: its own files, replaced
    assert (out / "model.ts").read_bytes() != b"" and json.loads((out / "export.json").read_text())
    (out / "export.json").write_text('{"mine": true}')  # now model.ts is not an export's
    assert tool.main(argv + ["--opts", *opts]) == 2
    assert tool.main(argv + ["--overwrite", "--opts", *opts]) == 0
    assert len(first) > 0 and (out / "notes.txt").read_text() == "keep\n"
    capsys.readouterr()
