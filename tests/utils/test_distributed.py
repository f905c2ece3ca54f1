"""Leaving a launched run: the process groups' threads are gone before the interpreter exits."""

import json
import os

import torch
from detectron2.engine import launch
from detectron2.utils import comm

from clipzss_d2.utils.distributed import leave_process_groups


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _worker(out_dir):
    gathered = comm.all_gather(torch.full((3,), float(comm.get_rank())))
    rank, during = comm.get_rank(), _native_threads()
    leave_process_groups()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"gathered": [t.tolist() for t in gathered], "during": during,
                   "after": _native_threads(),
                   "initialized": torch.distributed.is_initialized()}, f)  # fmt: skip


def test_leaving_joins_the_gloo_threads(tmp_path):
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path),))  # raises if a rank aborts
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["gathered"] == [[0.0] * 3, [1.0] * 3]
        assert not report["initialized"]
        # gloo runs a transport loop and two work threads per group (world + detectron2's local)
        assert report["after"] <= report["during"] - 4, report


def test_leaving_a_single_process_run_does_nothing():
    leave_process_groups()
    assert not torch.distributed.is_initialized()
