"""Inputs that used to end in a stack trace (issue 11, item 2) get one line and exit status 2
(1 for a demo image that cannot be processed while the others can)."""

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from clipzss_d2.checkpoint import SafeCheckpointer
from tests.helpers import ROOT, TINY_MODEL_OPTS, RunsACommand, load_script, tiny_cfg

demo = load_script("demo/demo.py", "clipzss_demo_errors")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    cfg = tiny_cfg(
        extra_opts=[
            "DATASETS.TRAIN", (), "DATASETS.TEST", (),
            "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96,
            "MODEL.CLIPZSS.TEST_VOCABULARY", ["sky", "tree"],
        ]
    )  # fmt: skip
    torch.manual_seed(0)
    SafeCheckpointer(build_model(cfg), save_dir=str(folder)).save("model")
    (folder / "config.yaml").write_text(cfg.dump())
    (folder / "not_yaml.yaml").write_text("MODEL:\n  WEIGHTS: [unclosed\n")
    marker = folder / "yaml_marker"
    (folder / "python_tag.yaml").write_text(
        f'MODEL: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    (folder / "missing_base.yaml").write_text("_BASE_: base/gone.yaml\n")
    (folder / "binary.yaml").write_bytes(b"\xff\xfe\x00\x01 a binary file")
    cv2.imwrite(str(folder / "wide.png"), np.full((8, 20000, 3), 90, np.uint8))
    cv2.imwrite(str(folder / "ok.png"), np.full((40, 50, 3), 90, np.uint8))
    return folder


def run_demo(tiny, capsys, *args, config="config.yaml", weights=None):
    argv = ["--config-file", str(tiny / config), *args]
    argv += ["--opts", "MODEL.WEIGHTS", str(weights or tiny / "model.pth")]
    code = demo.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_image_too_elongated_for_the_test_size(tiny, capsys, tmp_path):
    wide, ok = str(tiny / "wide.png"), str(tiny / "ok.png")
    code, err = run_demo(tiny, capsys, "--input", wide, ok, "--output", str(tmp_path))
    assert code == 1, err  # documented: some inputs could not be processed, the others were
    assert "20000x8 px is too elongated" in err and "crop it" in err
    assert (tmp_path / "ok.json").exists() and not (tmp_path / "wide.json").exists()


@pytest.mark.parametrize(
    "config, message",
    [
        ("not_yaml.yaml", "is not a valid config YAML (while parsing a flow sequence"),
        ("python_tag.yaml", "Python tags (!!python/...) are refused"),
        ("missing_base.yaml", "names a _BASE_ config that does not exist: "),
        ("binary.yaml", "is not UTF-8 text"),
    ],
)
def test_config_files_that_are_not_plain_yaml(tiny, capsys, tmp_path, config, message):
    out = tmp_path / "out"
    code, err = run_demo(
        tiny, capsys, "--input", str(tiny / "ok.png"), "--output", str(out), config=config
    )
    assert code == 2 and message in one_line(err)
    assert not out.exists() and not (tiny / "yaml_marker").exists()


def test_nan_confidence_threshold(tiny, capsys, tmp_path):
    code, err = run_demo(
        tiny, capsys, "--input", str(tiny / "ok.png"), "--output", str(tmp_path / "o"),
        "--confidence-threshold", "nan",
    )  # fmt: skip
    assert code == 2 and "between 0 and 1, got nan" in one_line(err)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"model": {"w": [1, 2]}}, "entry 'w' of its 'model' dict is a list"),
        (b"PK\x03\x04 not really a zip", "could not be read as a PyTorch checkpoint"),
    ],
)
def test_weights_that_are_not_a_checkpoint(tiny, capsys, tmp_path, content, message):
    path = tmp_path / "weights.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    code, err = run_demo(
        tiny, capsys, "--input", str(tiny / "ok.png"), "--output", str(tmp_path / "o"),
        weights=path,
    )  # fmt: skip
    line = one_line(err)
    assert code == 2 and message in line and "weights.pth" in line
    assert "weights_only" not in line  # torch's paragraph is not passed on


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a clip file at all" * 10, "could not be read as a PyTorch checkpoint"),
        ({"foo": torch.zeros(3)}, "do not fit open_clip's ClipZSS-Tiny-Test (30 missing"),
        ([torch.zeros(3)], "holds no named tensors (a state dict): it is not a weights file"),
        ("hostile", "is not a plain weights file"),
        (b"\x00" * 40, "could not be read as a safetensors file"),
    ],
)
def test_clip_weights_that_are_not_clip(tiny, capsys, tmp_path, content, message):
    """MODEL.CLIPZSS.CLIP.PRETRAINED naming junk, another model's weights or a pickle that runs
    a command: one line, exit 2, nothing run (the vocabulary is not cached, so the text tower
    loads)."""
    marker = tmp_path / "ran"
    path = tmp_path / ("clip.safetensors" if content == b"\x00" * 40 else "clip.pt")
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(RunsACommand(marker) if content == "hostile" else content, path)
    argv = ["--config-file", str(tiny / "config.yaml"), "--input", str(tiny / "ok.png"),
            "--output", str(tmp_path / "o"), "--vocab", "cat,dog", "--opts",
            "MODEL.WEIGHTS", str(tiny / "model.pth"), "MODEL.CLIPZSS.CLIP.PRETRAINED", str(path)]  # fmt: skip
    code = demo.main(argv)
    line = one_line(capsys.readouterr().err)
    assert code == 2 and message in line and str(path) in line, line
    assert not marker.exists() and not (tmp_path / "o").exists()


# -- train_net.py, as a subprocess -----------------------------------------------------------------
def train_net(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_net.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # torch's glog-style start-up notes (e.g. "W1129 ... No CUDA runtime is found") are not ours
    err = "\n".join(
        line for line in proc.stderr.splitlines() if not re.match(r"[IW]\d{4} \d\d:\d\d:\d\d", line)
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.returncode, one_line(err)


@pytest.mark.slow
def test_train_net_user_errors_stop_before_any_process_starts(tiny, tmp_path):
    voc = str(ROOT / "configs/voc.yaml")
    out = tmp_path / "out"
    tiny_opts = [str(o) for o in TINY_MODEL_OPTS] + ["OUTPUT_DIR", str(out)]

    # the README's first command on a machine with fewer GPUs than asked (none, here: the reason)
    asked = torch.cuda.device_count() + 1
    code, line = train_net(
        "--config-file", voc, "--num-gpus", str(asked), "OUTPUT_DIR", str(out), cwd=tmp_path
    )
    if asked == 1:
        assert code == 2 and "torch finds no CUDA device: " in line and "MODEL.DEVICE cpu" in line
        assert ("no NVIDIA driver" in line) or ("CPU-only build" in line) or ("driver" in line)
    else:
        assert code == 2 and f"--num-gpus {asked} asks for {asked} GPU(s)" in line
        assert f"but {asked - 1} CUDA device(s) were found" in line and "MODEL.DEVICE cpu" in line

    code, line = train_net("--config-file", voc, *tiny_opts, "SOLVER.MAX_ITER", cwd=tmp_path)
    assert code == 2 and "KEY VALUE pairs" in line and "SOLVER.MAX_ITER" in line

    code, line = train_net("--config-file", str(tiny / "not_yaml.yaml"), cwd=tmp_path)
    assert code == 2 and "not a valid config YAML" in line

    code, line = train_net("--config-file", voc, *tiny_opts, "SOLVER.NOPE", "1", cwd=tmp_path)
    assert code == 2 and "Non-existent key: SOLVER.NOPE" in line
    assert not out.exists()  # nothing started, nothing written

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    code, line = train_net(
        "--config-file", voc, "--eval-only", *tiny_opts, "MODEL.WEIGHTS", str(junk), cwd=tmp_path
    )
    assert code == 2 and "junk.pth could not be read as a PyTorch checkpoint" in line


# -- launch arguments and the other commands' arguments, in process ---------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-gpus", "-1"], "--num-gpus and --num-machines must be at least 1, got -1 and 1"),
        (["--num-machines", "0"], "--num-gpus and --num-machines must be at least 1, got 1 and 0"),
        (["--num-machines", "2", "--machine-rank", "2"], "--machine-rank 2 must be between 0 and"),
        (["--num-machines", "2", "--machine-rank", "-1"], "--machine-rank -1 must be between 0"),
        (
            ["--num-gpus", "2", "--dist-url", "tcp://host"],
            "'tcp://host' is not a rendezvous address",
        ),
        (["--num-machines", "2", "--dist-url", "auto"], "'auto' is not a rendezvous address"),
        (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE 'gpu' is not a device torch knows"),
    ],
)
def test_train_net_refuses_bad_launch_arguments_before_any_process(argv, message, capsys, tmp_path):
    from detectron2.engine import default_argument_parser

    train_net_module = load_script("train_net.py", "clipzss_train_net_launch")
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "configs/voc.yaml"), *argv, "OUTPUT_DIR", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as exit_info:
        train_net_module.check_before_launch(args)
    assert exit_info.value.code == 2
    assert message in one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_well_formed_launch_arguments_pass():
    from argparse import Namespace

    check = load_script("train_net.py", "clipzss_train_net_launch_ok").check_launch_arguments
    for num_gpus, num_machines, rank, url in [
        (1, 1, 0, "auto"),
        (8, 1, 0, "auto"),
        (8, 2, 1, "tcp://10.0.0.1:29500"),
        (4, 2, 0, "env://"),
        (2, 1, 0, "file:///tmp/rendezvous"),
    ]:
        check(
            Namespace(num_gpus=num_gpus, num_machines=num_machines, machine_rank=rank, dist_url=url)
        )


@pytest.mark.parametrize("seeds", [["-1"], ["0", str(2**32)]])
def test_run_miniworld_refuses_seeds_out_of_range(seeds, capsys, tmp_path):
    tool = load_script("tools/run_miniworld.py", "clipzss_run_miniworld_seeds")
    code = tool.run_main(tool.main, ["--seeds", *seeds, "--output", str(tmp_path / "out")])
    assert code == 2 and "--seeds must be between 0 and 2**32 - 1" in one_line(
        capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_eval_open_vocab_refuses_an_empty_dataset_list(capsys, tmp_path):
    tool = load_script("tools/eval_open_vocab.py", "clipzss_eval_open_vocab_empty")
    argv = [
        "--config-file",
        str(ROOT / "configs/open_vocab/coco_stuff171.yaml"),
        "--datasets",
        " , ",
    ]
    code = tool.main([*argv, "--output", str(tmp_path / "out")])
    assert code == 2 and "names no dataset" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- why torch finds no GPU -----------------------------------------------------------------------
def test_a_torch_built_for_a_newer_cuda_than_the_driver_is_named(monkeypatch):
    from clipzss_d2.utils import cuda_check

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    line = cuda_check.why_no_gpu(driver=(535, 104, 5))  # a CUDA 12.2 cluster driver
    assert "built for CUDA 13.0, which needs an NVIDIA driver >= 580.65.6" in line
    assert "this machine's driver is 535.104.5" in line and "CLIPZSS_TORCH=cu118" in line
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    assert "needs an NVIDIA driver" not in cuda_check.why_no_gpu(driver=(535, 104, 5))
    monkeypatch.setattr(cuda_check, "driver_version", lambda: None)
    assert cuda_check.why_no_gpu() == "no NVIDIA driver was found on this machine"
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "is a CPU-only build" in cuda_check.why_no_gpu()


def test_train_net_says_why_it_finds_no_gpu(monkeypatch):
    """check_devices, as train_net.py runs it before any process starts (the query mocked)."""
    from types import SimpleNamespace

    from clipzss_d2 import get_clipzss_cfg
    from clipzss_d2.errors import UserInputError
    from clipzss_d2.utils import cuda_check

    train_net_module = load_script("train_net.py", "clipzss_train_net")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(cuda_check, "driver_version", lambda: (470, 57, 2))
    cfg = get_clipzss_cfg()
    with pytest.raises(UserInputError) as error:
        train_net_module.check_devices(cfg, SimpleNamespace(num_gpus=8))
    message = str(error.value)
    assert "\n" not in message and "torch finds no CUDA device" in message
    assert "driver is 470.57.2" in message and "MODEL.DEVICE cpu" in message


# -- choosing the torch build at install time -----------------------------------------------------
def install_dry_run(tmp_path, **env):
    full_env = {**os.environ, "CLIPZSS_INSTALL_DRY_RUN": "1", "VENV": str(tmp_path / "venv"), **env}
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh")],
        env=full_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return run.returncode, run.stdout, run.stderr


def test_install_takes_the_torch_build_the_user_names(tmp_path):
    code, out, err = install_dry_run(tmp_path, CLIPZSS_TORCH="cu118")
    assert code == 0, err
    assert "would run pip install torch>=2.1 torchvision>=0.16" in out
    assert "--index-url https://download.pytorch.org/whl/cu118" in out
    code, out, _ = install_dry_run(
        tmp_path, CLIPZSS_TORCH="cpu", TORCH_INDEX_URL="https://m.example/whl"
    )
    assert code == 0 and "--index-url https://m.example/whl/cpu" in out
    code, out, _ = install_dry_run(tmp_path)  # unset: PyPI's build, no index
    assert code == 0 and "--index-url" not in out and "would run pip install" in out
    assert not (tmp_path / "venv").exists()  # a dry run changes nothing


def test_install_replaces_another_torch_build_only_when_asked(tmp_path):
    """A venv whose torch is the cu130 build: kept by default and for cu130, replaced for cu118."""
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake_python = venv_bin / "python"  # answers like a python with a cu130 torch would
    fake_python.write_text("#!/usr/bin/env bash\necho cu130\n")
    fake_python.chmod(0o755)
    assert "would keep the installed torch" in install_dry_run(tmp_path)[1]
    assert "would keep the installed torch" in install_dry_run(tmp_path, CLIPZSS_TORCH="cu130")[1]
    out = install_dry_run(tmp_path, CLIPZSS_TORCH="cu118")[1]
    assert "torch in" in out and ": cu130; wanted: cu118" in out
    assert "would uninstall torch torchvision" in out and "whl/cu118" in out


@pytest.mark.parametrize("value", ["cuda12", "cu12.1", "gpu", "cu121; rm -rf ~"])
def test_install_refuses_a_build_name_that_is_none(tmp_path, value):
    code, out, err = install_dry_run(tmp_path, CLIPZSS_TORCH=value)
    assert code == 1 and out == ""
    assert one_line(err).endswith(
        "use cpu or the CUDA version as cuNNN (cu118, cu121, cu124, ...)."
    )
    assert f"CLIPZSS_TORCH='{value}' names no torch build" in err
