"""Training across processes (``accelerate launch --num_processes N``, or torchrun): who this
process is, and the few values every process must agree on.

Each process trains on its own share of every global batch; the main process alone evaluates,
writes the run log, checkpoints, saves and stores, and tells the others what they need to know
(the run id, whether early stopping ends the run, the final metrics).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def world_size() -> int:
    """The number of training processes (1 outside a distributed launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def join(device: str) -> None:
    """Join the process group the launcher set up, on the device a run of ``device`` trains on
    (``cpu``: gloo, ``cuda``: nccl); a no-op in a single process. accelerate keeps one process
    state, so this must come before anything else asks for it (the trainer's Accelerator then
    finds it)."""
    if world_size() == 1:
        return
    from accelerate import PartialState

    from adapters.base.device import plan_device

    PartialState(cpu=plan_device(device).device == "cpu")


def from_main(value: T) -> T:
    """The main process's ``value``, on every process (each must call it, at the same point,
    after ``join``)."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def on_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by the main process alone, and its value, or the error it raised for the user,
    on every process: for work that writes shared files, or that every process would repeat."""
    if world_size() == 1:
        return fn()
    from adapters_store.errors import HintedError

    value, error = None, None
    if is_main():
        try:
            value = fn()
        except HintedError as exc:  # the others raise it too, rather than wait for a value
            error = exc
    value, error = from_main((value, error))
    if error is not None:
        raise error
    return value


def shard(batch: list[int], size: int, index: int) -> list[int]:
    """Process ``index``'s rows of a global batch split into ``size`` near-equal contiguous parts
    (so the processes' rows together are exactly the batch). A batch of fewer rows than processes
    lends a row to the processes left without one: every process must step together."""
    if len(batch) < size:
        return [batch[index % len(batch)]]
    base, extra = divmod(len(batch), size)
    start = index * base + min(index, extra)
    return batch[start:start + base + (1 if index < extra else 0)]
