"""Deterministic mode: the data stream, RNG states in checkpoints, same-seed identity, kill (SIGKILL)
and resume to the same weights and metrics, and what 2 processes share with 1."""

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from clipzss_d2.reproducibility import (
    GlobalBatchSampler,
    PositionDataset,
    RNGStates,
    build_deterministic_train_loader,
    capture_rng_state,
    isolated_rng,
)
from tests.data_samples import stage_voc
from tests.helpers import TINY_CLIP
from tests.train_runs import ROOT, run, train_env, train_net_command


def draw(record):
    """A 'mapper' drawing from the three global RNGs detectron2 augmentations may use."""
    return (
        record["id"],
        random.random(),
        float(np.random.uniform()),  # noqa: NPY002
        float(torch.rand(())),
    )


def batches(world_size, rank, iters, start_iter=0, workers=0, dicts=None):
    dicts = dicts or [{"id": i} for i in range(5)]
    loader = torch.utils.data.DataLoader(
        PositionDataset(dicts, draw, seed=3),
        batch_sampler=GlobalBatchSampler(6, rank, world_size, start_iter),
        num_workers=workers,
        collate_fn=lambda b: b,
        generator=torch.Generator().manual_seed(0),  # as build_deterministic_train_loader does
    )
    it = iter(loader)
    return [next(it) for _ in range(iters)]


def test_data_stream_is_a_function_of_seed_and_position_only():
    single = batches(1, 0, 4)
    # each epoch (5 images) visits every image once, in a seeded order
    ids = [s[0] for batch in single for s in batch]
    assert sorted(ids[:5]) == sorted(ids[5:10]) == [0, 1, 2, 3, 4]
    assert len({s[1:] for batch in single for s in batch}) == 24  # fresh draws per sample
    # two processes split each global batch: rank 0 the first half, rank 1 the second
    ranks = [batches(2, r, 4) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == single
    # a resumed run starts at its iteration's samples; workers do not change anything
    assert batches(1, 0, 2, start_iter=2) == single[2:]
    assert batches(1, 0, 4, workers=2) == single
    # the training RNG stream is untouched by data loading
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    batches(1, 0, 2)
    assert torch.equal(torch.rand(3), expected)


def test_isolated_rng_restores_states():
    before = capture_rng_state()
    with isolated_rng(5):
        first = (random.random(), float(torch.rand(())))
    with isolated_rng(5):
        assert (random.random(), float(torch.rand(()))) == first
    after = capture_rng_state()
    assert before["python"] == after["python"] and torch.equal(before["torch"], after["torch"])


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    rng = RNGStates()
    torch.save({"rng": rng.state_dict()}, tmp_path / "c.pth")
    expected = (random.random(), float(np.random.uniform()), float(torch.rand(())))  # noqa: NPY002
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
    rng.load_state_dict(torch.load(tmp_path / "c.pth", weights_only=True)["rng"])
    assert (random.random(), float(np.random.uniform()), float(torch.rand(()))) == expected  # noqa: NPY002


def test_ranks_of_the_real_loader_split_the_global_batch(shared_data, tmp_path, monkeypatch):
    """The VOC samples through the real mapper (crop, resize, SSD colour jitter): two ranks'
    batches, concatenated, are the single-process batch to the last pixel."""
    from detectron2.utils import comm

    from clipzss_d2.data import ZeroShotSemSegDatasetMapper
    from clipzss_d2.data.datasets import register_all_zeroshot, registered_root
    from clipzss_d2.data.prepare import prepare_voc
    from tests.helpers import tiny_cfg

    lists = stage_voc(shared_data, tmp_path)
    prepare_voc(str(tmp_path), aug_list=lists["aug_list"], val_list=lists["val_list"], log=print)
    previous = registered_root()
    register_all_zeroshot(str(tmp_path))
    cfg = tiny_cfg(
        str(ROOT / "configs/voc.yaml"),
        ["SEED", 0, "DETERMINISTIC", True, "SOLVER.IMS_PER_BATCH", 4,
         "DATASETS.TRAIN", ("voc20_zs_train",), "INPUT.CROP.SIZE", (64, 64),
         "INPUT.MIN_SIZE_TRAIN", (64, 80), "INPUT.MAX_SIZE_TRAIN", 128, "DATALOADER.NUM_WORKERS", 0],
    )  # fmt: skip
    mapper = ZeroShotSemSegDatasetMapper(cfg, is_train=True)

    def first_batches(rank, world):
        monkeypatch.setattr(comm, "get_rank", lambda: rank)
        monkeypatch.setattr(comm, "get_world_size", lambda: world)
        torch.manual_seed(0)
        it = iter(build_deterministic_train_loader(cfg, mapper))
        out = [next(it) for _ in range(2)]
        assert torch.equal(torch.rand(3), expected)  # the training RNG stream is untouched
        return out

    torch.manual_seed(0)
    expected = torch.rand(3)

    try:
        single, r0, r1 = first_batches(0, 1), first_batches(0, 2), first_batches(1, 2)
    finally:
        register_all_zeroshot(previous)
    for whole, a, b in zip(single, r0, r1):
        assert len(whole) == 4 and len(a) == len(b) == 2
        for x, y in zip(whole, a + b):
            assert x["file_name"] == y["file_name"]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])


# -- end to end, train_net.py as users run it ------------------------------------------------------
@pytest.fixture(scope="module")
def voc_root(shared_data, tmp_path_factory):
    from clipzss_d2.data.prepare import prepare_voc

    root = tmp_path_factory.mktemp("datasets")
    lists = stage_voc(shared_data, root)
    prepare_voc(str(root), aug_list=lists["aug_list"], val_list=lists["val_list"], log=print)
    return root


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    """Tiny CLIP weights in a file, the route real weights take."""
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), path)
    return path


def deterministic_opts(clip_file, max_iter=10):
    return [
        "DETERMINISTIC", "True", "SEED", "0", "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.CLIPZSS.CLIP.PRETRAINED", str(clip_file),
    ]  # fmt: skip


def final_state(out: Path) -> dict:
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)


def final_metrics(out: Path) -> dict:
    lines = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines() if x.strip()]
    # NaN (class absent from the ground truth) as a string, so that equal means equal
    return {k: repr(v) for k, v in lines[-1].items() if "IoU" in k or "Acc" in k}


def assert_same_state(a: dict, b: dict):
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow
def test_same_seed_runs_and_a_killed_and_resumed_run_end_identical(voc_root, clip_file, tmp_path):
    opts = deterministic_opts(clip_file)
    straight, again, killed = tmp_path / "straight", tmp_path / "again", tmp_path / "killed"
    run(voc_root, straight, *opts)
    run(voc_root, again, *opts)
    assert_same_state(final_state(straight), final_state(again))
    metrics = final_metrics(straight)
    assert metrics == final_metrics(again) and "sem_seg/mIoU(unseen)" in metrics

    # kill -9 as soon as a checkpoint of the first half is on disk, then --resume
    proc = subprocess.Popen(
        train_net_command(killed, *opts),
        cwd=ROOT, env=train_env(voc_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tag = killed / "last_checkpoint"
    deadline = time.time() + 600
    while not (tag.exists() and tag.read_text() in ("model_0000003.pth", "model_0000005.pth")):
        assert proc.poll() is None and time.time() < deadline, "the run ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model_final.pth").exists()
    resumed_from = tag.read_text()
    log = run(voc_root, killed, "--resume", *opts)
    assert f"Loading from {killed / resumed_from}" in log

    assert_same_state(final_state(straight), final_state(killed))
    assert final_metrics(straight) == final_metrics(killed)


@pytest.mark.slow
def test_a_warm_text_cache_trains_the_same_model_as_a_cold_one(voc_root, clip_file, tmp_path):
    """The first run of a vocabulary builds CLIP's text tower (cache miss), later runs read the
    embeddings from disk: both must train the same model (an ablation shares one cache)."""
    cache = tmp_path / "text_cache"
    opts = deterministic_opts(clip_file, max_iter=3) + [
        "MODEL.CLIPZSS.TEXT.CACHE_DIR", str(cache),
        "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", "0.1",  # the configs' value: training draws from the RNG
    ]  # fmt: skip
    run(voc_root, tmp_path / "cold", *opts)
    assert list(cache.glob("*.safetensors")), "the cold run wrote no text-embedding cache"
    log = run(voc_root, tmp_path / "warm", *opts)
    assert "text embeddings from" in log  # the warm run read the cache
    assert_same_state(final_state(tmp_path / "cold"), final_state(tmp_path / "warm"))


@pytest.mark.slow
def test_a_teacher_cache_on_disk_trains_the_same_model_when_read_back(
    voc_root, clip_file, tmp_path
):
    """MODEL.CLIPZSS.TEACHER.CACHE with CACHE_DIR through train_net.py: the first run runs the
    teacher once per image and writes its entries, the second reads them all and never runs
    it; both train the same model bit for bit (entries are stored as computed)."""
    cache = tmp_path / "teacher_cache"
    opts = deterministic_opts(clip_file, max_iter=4) + [
        "MODEL.CLIPZSS.TEACHER.CACHE", "True",
        "MODEL.CLIPZSS.TEACHER.CACHE_DIR", str(cache),
    ]  # fmt: skip
    run(voc_root, tmp_path / "cold", *opts)
    entries = list(cache.rglob("*.safetensors"))
    lines = [json.loads(x) for x in (tmp_path / "cold" / "metrics.json").read_text().splitlines()]
    cold = [m["teacher_cache/miss_share"] for m in lines if "teacher_cache/miss_share" in m]
    assert cold and cold[0] > 0 and 0 < len(entries) <= 9  # the 9 VOC training samples
    run(voc_root, tmp_path / "warm", *opts)
    lines = [json.loads(x) for x in (tmp_path / "warm" / "metrics.json").read_text().splitlines()]
    warm = [m["teacher_cache/miss_share"] for m in lines if "teacher_cache/miss_share" in m]
    assert warm and set(warm) == {0.0}
    assert sorted(cache.rglob("*.safetensors")) == sorted(entries)
    assert_same_state(final_state(tmp_path / "cold"), final_state(tmp_path / "warm"))


def weights(out: Path, name: str) -> dict:
    model = torch.load(out / f"{name}.pth", map_location="cpu", weights_only=True)["model"]
    return {k: v for k, v in model.items() if v.is_floating_point() and "running_" not in k}


def distance(a: dict, b: dict) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5)


@pytest.mark.slow
def test_two_processes_follow_the_single_process_run(voc_root, clip_file, tmp_path):
    """Same global batch, same samples and augmentations, one set of BatchNorm statistics: the
    2-process run stays close to the 1-process one. Not bit-identical: the
    summation order differs (docs/reproducibility.md#one-process-against-several)."""
    opts = deterministic_opts(clip_file, max_iter=4)
    one, two = tmp_path / "one", tmp_path / "two"
    run(voc_root, one, *opts)
    run(voc_root, two, *opts, num_gpus=2)
    moved = distance(weights(one, "model_0000003"), weights(one, "model_0000001"))
    gap = distance(weights(two, "model_0000003"), weights(one, "model_0000003"))
    print(f"2 vs 1 process gap: {gap / moved:.4f} of the weights' movement")
    assert 0 < gap < 0.1 * moved, (gap, moved)
