"""The training step as device work only, so that it can be captured once in a CUDA graph and replayed.

A step reads its batch from the epoch's order (a buffer the host refills in place at epoch
boundaries), distorts it with counter-based random numbers keyed by the step, runs forward,
backward and a fused Adam whose learning rate is a device tensor written by the step from the
step counter, adds its loss and accuracy to device sums, and advances the step counter: a device
tensor too. Nothing in it reads a value back to the host, so between log, eval and checkpoint
intervals the host only queues work (eagerly, or as one graph replay on CUDA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distort import distort
from .rng import CounterRandom

CHANNELS_LAST = torch.channels_last


def memory_format_for(device: torch.device) -> torch.memory_format:
    """channels_last on a CPU (oneDNN's convolutions run about 1.5x faster so); plain NCHW on CUDA, where
    this net's one-channel convolutions otherwise pay cuDNN's layout conversions (H200, batch 256, graph
    replay: 1.69 ms/step in fp32 NCHW against 1.77 channels_last; bf16 1.81-1.82 either way)."""
    return CHANNELS_LAST if device.type == "cpu" else torch.contiguous_format
EAGER_WARMUP_STEPS = 3  # real steps run eagerly before capture


def lr_factor(step: int, warmup_steps: int, half_life: int) -> float:
    """Linear warm-up, then exponential decay; independent of --steps so runs can be extended."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return warm * 0.5 ** (step / half_life)


# The job's --lr, --warmup-steps and --lr-half-life defaults; the benches time the same schedule.
DEFAULT_LR, DEFAULT_WARMUP_STEPS, DEFAULT_LR_HALF_LIFE = 1e-3, 500, 2000


class LrSchedule:
    """``lr_factor`` computed on the device into the tensor Adam reads, from the device step."""

    def __init__(self, base_lr: float = DEFAULT_LR, warmup_steps: int = DEFAULT_WARMUP_STEPS,
                 half_life: int = DEFAULT_LR_HALF_LIFE, device="cpu"):
        self.base_lr, self.warmup_steps, self.half_life = base_lr, warmup_steps, half_life
        self.lr = torch.full((), base_lr * lr_factor(0, warmup_steps, half_life), dtype=torch.float32,
                             device=device)

    def write(self, step: torch.Tensor) -> None:
        s = step.to(torch.float64)
        factor = torch.exp2(-s / self.half_life)
        if self.warmup_steps:
            factor = factor * torch.clamp((s + 1) / self.warmup_steps, max=1.0)
        self.lr.copy_(factor * self.base_lr)


def make_optimizer(model: torch.nn.Module, schedule: LrSchedule) -> torch.optim.Adam:
    """Adam reading the schedule's lr tensor: fused (one kernel for all parameters), capturable on CUDA."""
    on_cuda = schedule.lr.device.type == "cuda"
    try:
        return torch.optim.Adam(model.parameters(), lr=schedule.lr, fused=True, capturable=on_cuda)
    except RuntimeError:  # an older torch without the fused CPU kernel
        return torch.optim.Adam(model.parameters(), lr=schedule.lr, foreach=False, capturable=on_cuda)


def adopt_lr_tensor(optimizer: torch.optim.Optimizer, schedule: LrSchedule) -> None:
    """After load_state_dict (which brings the saved lr as a new tensor), point Adam at the schedule's."""
    for group in optimizer.param_groups:
        schedule.lr.copy_(group["lr"])
        group["lr"] = schedule.lr


class TrainMeter:
    """Loss and accuracy summed on the device between log lines (no per-step host sync)."""

    def __init__(self, device):
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss*n, correct, n

    def add(self, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        correct = correct.double()
        self.totals.add_(torch.stack([loss.double() * count, correct, correct.new_full((), count)]))

    def global_totals(self, distributed: bool) -> torch.Tensor:
        totals = self.totals.clone()
        if distributed:
            torch.distributed.all_reduce(totals)
        return totals

    def take(self, distributed: bool) -> tuple[float, float]:
        """(mean loss, accuracy) since the last call, over all ranks; resets the sums."""
        loss_sum, correct, count = self.global_totals(distributed).tolist()
        self.totals.zero_()
        return loss_sum / count, correct / count


class TrainStep:
    """One optimiser step of the job, run eagerly or replayed from a captured CUDA graph.

    ``run(step)`` takes the host's step number only to refill the epoch order when an epoch
    begins; everything the step computes comes from ``self.step``, the device counter it advances.
    """

    def __init__(self, net, optimizer, schedule: LrSchedule, meter: TrainMeter, data, sampler,
                 distortion: str, rng: CounterRandom, own_part: slice, start_step: int,
                 bf16: bool = False, memory_format=None):
        self.net, self.optimizer, self.schedule, self.meter = net, optimizer, schedule, meter
        self.data, self.sampler, self.distortion, self.rng, self.own_part = data, sampler, distortion, rng, own_part
        self.device = schedule.lr.device
        self.bf16 = bf16
        self.memory_format = memory_format or memory_format_for(self.device)
        self.step = torch.full((), start_step, dtype=torch.int64, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.wants_graph = self.graph_required = False
        self.capture_error: str | None = None
        self._eager_runs, self._side = 0, None

    def use_graph(self, required: bool) -> None:
        """Capture the step after a few eager ones (CUDA only). Unless ``required``, a capture that
        fails leaves the run eager, with the reason in ``capture_error``."""
        self.wants_graph, self.graph_required = True, required

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's freshly distorted float images and labels for the current device step."""
        indices = self.sampler.batch_at(self.step)[self.own_part]
        images = self.data.train_images[indices].float().div_(255)
        images = distort(images, self.distortion, self.rng.at(self.step)).images
        return images.contiguous(memory_format=self.memory_format), self.data.train_labels[indices]

    def _body(self) -> None:
        images, labels = self.batch()
        self.schedule.write(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        # The autocast weight cache must be off where the step is captured (torch.cuda.graph's docs).
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            logits = self.net(images)
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        self.optimizer.step()
        self.meter.add(loss.detach(), (logits.argmax(dim=1) == labels).sum(), len(labels))
        self.step += 1

    def run(self, step: int) -> None:
        """Queue step ``step`` (the device counter must already be there): eager, or a graph replay."""
        self.sampler.prepare(step)
        if self.wants_graph and self.graph is None and self._eager_runs >= EAGER_WARMUP_STEPS:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
        elif self.wants_graph:
            self._warmup_step()
        else:
            self._body()

    def _warmup_step(self) -> None:
        """A real step, eager, on a side stream, as torch.cuda.graph wants before capture: it runs
        what capture cannot (cuDNN autotuning, Adam's lazy state, a compile)."""
        current = torch.cuda.current_stream(self.device)
        self._side = self._side or torch.cuda.Stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            self._body()
        current.wait_stream(self._side)
        self._eager_runs += 1

    def _capture(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)  # the graph's backward then owns the grads
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._body()
        except RuntimeError as err:
            if self.graph_required:
                raise
            self.wants_graph, self.capture_error = False, f"{type(err).__name__}: {str(err).splitlines()[0]}"
            return
        self.graph = graph
