"""The job's training step as device work (jobs/stn/training.py, jobs/stn/rng.py), checked on the CPU.

The CUDA graph itself needs a GPU (bench/gpu_check.sh runs it there); what a CPU can show is that
the step it captures is a pure function of its device state: random numbers keyed by the step
counter, the learning rate written from it, and no value read back to the host between logs.
"""

from __future__ import annotations

import pytest
import torch
import train_stn  # tests/conftest.py puts jobs/ on sys.path
from stn.data import BatchSampler, load_digits
from stn.model import build_model
from stn.rng import CounterRandom, permutation
from stn.training import (
    LrSchedule,
    TrainMeter,
    TrainStep,
    adopt_lr_tensor,
    lr_factor,
    make_optimizer,
)
from torch.overrides import TorchFunctionMode

from tests.stn_helpers import explain, run_job

# Tensor methods that make the host wait for the device (or copy a value to it).
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
              torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.cpu, torch.Tensor.numpy,
              torch.Tensor.nonzero, torch.nonzero}


class HostReads(TorchFunctionMode):
    """Counts, by name, the calls that would synchronise with a GPU."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def make_step(distortion: str = "RTS", batch: int = 16, start_step: int = 0, seed: int = 0) -> TrainStep:
    torch.manual_seed(0)
    data = load_digits("digits", "")
    model = build_model("stcnn", train_stn.canvas_size(distortion))
    schedule = LrSchedule(1e-3, 10, 2000, "cpu")
    sampler = BatchSampler(len(data.train_labels), batch, seed, "cpu")
    return TrainStep(model, make_optimizer(model, schedule), schedule, TrainMeter("cpu"), data, sampler,
                     distortion, CounterRandom(seed, "cpu"), slice(0, batch), start_step)


def test_counter_random_is_a_pure_function_of_key_step_and_draw():
    a, b = CounterRandom(7, "cpu"), CounterRandom(7, "cpu")
    first = a.at(3).rand(1000)
    assert torch.equal(first, b.at(3).rand(1000))
    assert torch.equal(a.at(torch.tensor(3)).rand(1000), first)  # a step tensor draws what the int draws
    assert not torch.equal(first, a.at(4).rand(1000))
    assert not torch.equal(first, CounterRandom(8, "cpu").at(3).rand(1000))
    a.at(3).rand(1000)
    assert not torch.equal(first, a.rand(1000)), "the second draw of a step must differ from the first"


def test_counter_random_distributions():
    rng = CounterRandom(1, "cpu").at(0)
    uniform = rng.rand(200_000)
    assert uniform.min() >= 0 and uniform.max() < 1
    assert abs(uniform.mean().item() - 0.5) < 0.005 and abs(uniform.var().item() - 1 / 12) < 0.002
    normal = rng.randn(200_000)
    assert abs(normal.mean().item()) < 0.01 and abs(normal.std().item() - 1) < 0.01
    ints = rng.randint(13, 100_000)
    assert ints.min() == 0 and ints.max() == 13
    counts = torch.bincount(ints, minlength=14).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.05


def test_permutation_is_fixed_by_its_key():
    order = permutation(5, 1000, "cpu")
    assert sorted(order.tolist()) == list(range(1000))
    assert torch.equal(order, permutation(5, 1000, "cpu"))
    assert not torch.equal(order, permutation(6, 1000, "cpu"))


@pytest.mark.parametrize("warmup", [0, 10])
def test_device_lr_schedule_matches_the_formula(warmup):
    schedule = LrSchedule(1e-3, warmup, 50, "cpu")
    for step in (0, 1, 5, 9, 10, 49, 50, 500):
        schedule.write(torch.tensor(step))
        assert schedule.lr.item() == pytest.approx(1e-3 * lr_factor(step, warmup, 50), rel=1e-6), step


def test_sampler_batch_at_a_device_step_is_the_batch_of_that_step():
    sampler = BatchSampler(100, 10, seed=3, device="cpu")
    for step in (0, 9, 10, 25):
        sampler.prepare(step)
        assert torch.equal(sampler.batch_at(torch.tensor(step)), sampler.indices(step))


def test_steps_read_nothing_back_to_the_host():
    step = make_step()
    step.run(0)  # lazy state (Adam's moments) is made on the first step
    with HostReads() as reads:
        for number in range(1, 25):
            step.run(number)
    assert reads.calls == [], reads.calls
    with HostReads() as reads:
        step.meter.take(distributed=False)
    assert reads.calls, "the counting mode must see the log interval's read"


def test_epoch_boundary_needs_no_host_read():
    step = make_step(batch=512)  # the digits set has 1,442 training images: 2 steps an epoch
    step.run(0)
    with HostReads() as reads:
        for number in range(1, 7):
            step.run(number)
    assert reads.calls == [], reads.calls


def test_the_step_counter_and_sums_advance_on_the_device():
    step = make_step(batch=16, start_step=5)
    for number in range(5, 12):
        step.run(number)
    assert step.step.item() == 12
    loss_sum, correct, count = step.meter.totals.tolist()
    assert count == 7 * 16 and 0 <= correct <= count and loss_sum > 0
    assert step.schedule.lr.item() == pytest.approx(1e-3 * lr_factor(11, 10, 2000), rel=1e-6)


def test_a_step_is_a_function_of_its_step_number_not_of_the_steps_before():
    """What makes capture after a few eager steps, and resume at any step, give the same batches."""
    straight, jumped = make_step(), make_step(start_step=40)
    jumped.sampler.prepare(40)
    images, labels = jumped.batch()
    straight.run(0)
    straight.step.fill_(40)
    straight.sampler.prepare(40)
    expected_images, expected_labels = straight.batch()
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert images.shape == (16, 1, 42, 42) and images.is_contiguous(memory_format=torch.channels_last)


def test_graph_on_without_cuda_is_a_one_line_error(tmp_path):
    result = run_job("--smoke", "--graph", "on", "--out", str(tmp_path / "run"))
    assert result.returncode == 2, explain(result)
    assert "--graph on needs a CUDA device" in result.stderr and "Traceback" not in result.stderr


def test_optimizer_reads_the_schedule_lr_tensor_after_a_restore():
    model = build_model("cnn", 28)
    schedule = LrSchedule(1e-3, 0, 100, "cpu")
    optimizer = make_optimizer(model, schedule)
    saved = optimizer.state_dict()
    fresh_schedule = LrSchedule(5.0, 0, 100, "cpu")
    fresh = make_optimizer(model, fresh_schedule)
    fresh.load_state_dict(saved)
    adopt_lr_tensor(fresh, fresh_schedule)
    assert fresh.param_groups[0]["lr"] is fresh_schedule.lr
    assert fresh_schedule.lr.item() == pytest.approx(1e-3)
