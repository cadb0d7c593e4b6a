"""Stage runs launched as several processes (``accelerate launch``, ``torchrun``): which process this is,
and what the main process shares with the others.

Reads: the launcher's environment (``WORLD_SIZE``).  Writes: nothing.

Every process of a launch runs the same stage, but only the main one writes to the store: one ``Run``
row, one artifact, one set of events. The others (*followers*) read their inputs from the store as the
main process does, train their share, and leave the recording to it. A single-process run never
imports Accelerate here.
"""

from __future__ import annotations

import os


def launched() -> bool:
    """True when this process is one of several of a distributed launch."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    """True for the process that records the run (and for any single-process run)."""
    return int(os.environ.get("RANK", "0")) == 0


def share(value):
    """The main process's ``value``, on every process (each calls this at the same point)."""
    if not launched():
        return value
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    PartialState(cpu=not torch.cuda.is_available())  # joins the launch's process group (gloo on CPU)
    return broadcast_object_list([value], from_process=0)[0]
