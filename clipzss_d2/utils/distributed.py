"""Leaving a distributed run cleanly.

A gloo worker thread may drop the last reference to a finished collective's tensors after the
main thread has returned; if that happens while the interpreter shuts down, the thread cannot
take the GIL and the process aborts ("terminate called without an active exception", SIGABRT)
after all its work is done. Destroying the process groups before returning joins those threads
while Python is still alive.
"""

import gc

import torch.distributed as dist
from detectron2.utils import comm


def leave_process_groups() -> None:
    """Wait for every rank, then destroy all process groups, detectron2's local one included.

    Call it last in a function that `detectron2.engine.launch` runs; it does nothing in a
    single-process run."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    comm.synchronize()
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None  # detectron2 keeps it; it holds a group's threads alive
    comm.create_local_process_group.cache_clear()
    comm._get_global_gloo_group.cache_clear()
    gc.collect()  # the groups' destructors join their threads now, not at interpreter exit
