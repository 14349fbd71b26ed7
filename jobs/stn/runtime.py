"""The job's process and device: rank and world under torchrun, the device, stop signals, the training clock."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


class UsageError(RuntimeError):
    """A flag combination that argparse cannot catch (reported as one line, exit 2)."""


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_runtime(requested: str) -> Runtime:
    """Pick the device and, under torchrun, join the process group."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device cuda but this torch ({torch.__version__}) sees no CUDA device")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    backend = ("nccl" if use_cuda else "gloo") if world_size > 1 else "none"
    if world_size > 1:
        dist.init_process_group(backend)
    print(f"[rank {rank}/{world_size}] started: rank={rank} world_size={world_size} "
          f"local_rank={local_rank} device={describe(device)} backend={backend}", flush=True)
    return Runtime(rank, world_size, local_rank, device)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def log(rt: Runtime, message: str) -> None:
    if rt.is_main:
        print(message, flush=True)


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the training loop checks between steps."""

    def __init__(self):
        self.signum: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, _frame) -> None:
        # No printing here: a handler that writes to stdout can interrupt another write.
        self.signum = self.signum or signum


def agreed_stop(stop: StopRequest, rt: Runtime, at_sync_point: bool) -> bool:
    """True when this step should end the run; under DDP all ranks agree, at log steps."""
    if not rt.distributed:
        return stop.signum is not None
    if not at_sync_point:
        return False
    flag = torch.tensor([0.0 if stop.signum is None else 1.0], device=rt.device)
    dist.all_reduce(flag)
    return flag.item() > 0


class TrainClock:
    """Training seconds and images, not counting evaluation and checkpoint pauses."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.images = device, 0.0, 0
        self._pending, self._mark = 0, time.perf_counter()

    def add(self, images: int) -> None:
        self._pending += images

    def pause(self) -> tuple[float, int]:
        """Stop the clock; returns (seconds, images) since the last pause."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds, images = time.perf_counter() - self._mark, self._pending
        self.seconds, self.images, self._pending = self.seconds + seconds, self.images + images, 0
        return seconds, images

    def resume(self) -> None:
        self._mark = time.perf_counter()

    def discard(self) -> float:
        """Drop the time and images since the last pause (a warm-up); returns its seconds."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._mark
        self._pending, self._mark = 0, time.perf_counter()
        return seconds
