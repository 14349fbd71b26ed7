#!/usr/bin/env python3
"""Training throughput of jobs/train_stn.py against the PyTorch STN tutorial, same device, same run.

    python bench/train_throughput.py                        # CPU, about a minute and a half
    python bench/train_throughput.py --seconds 20           # steadier numbers
    python bench/train_throughput.py --threads 1            # on a shared CPU: oversubscribed threads thrash
    python bench/train_throughput.py --modes eager graph compile compile+graph --batch-sizes 64 256 1024  # GPU

Rows, at each batch size, timed in alternating rounds (the best round counts):

* the PyTorch tutorial STN: its network (localisation conv 1->8 k7, pool, relu,
  conv 8->10 k5, pool, relu, fc 90->32->6; classifier conv 1->10 k5, pool,
  conv 10->20 k5, dropout2d, pool, fc 320->50->10), plain SGD at lr 0.01,
  batches from a torch DataLoader over a TensorDataset copied to the device
  every step, 28x28 digits with no distortion (the tutorial has none);
* train_stn's step (stn/training.py: data resident on the device as uint8,
  fused Adam with the lr schedule on the device, fp32 with TF32 on CUDA,
  channels_last on the CPU, loss and accuracy summed on the device) driving the tutorial's
  network on the same undistorted 28x28 digits: what the step alone changes;
* for each --modes entry, train_stn's ST-CNN on the same 28x28 digits, and the
  job's real loop: ST-CNN on RTS (42x42), the distortion drawn on the device
  every step. ``graph`` replays the whole step as one CUDA graph, ``compile``
  torch.compiles the model (static shapes), ``compile+graph`` both.

FLOPs per step are counted with torch.utils.flop_counter (matmuls and
convolutions, forward and backward); on CUDA the achieved rate is also shown
as a fraction of the card's dense bf16 peak when the card is in PEAK_BF16.
The closing lines compare the real loop with the tutorial at batch 64 (the
tutorial's) and at equal batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from stn.data import BatchSampler, load_digits, mix_seed  # noqa: E402
from stn.distort import canvas_size  # noqa: E402
from stn.model import build_model, parameter_count  # noqa: E402
from stn.rng import CounterRandom  # noqa: E402
from stn.training import (  # noqa: E402
    LrSchedule,
    TrainMeter,
    TrainStep,
    make_optimizer,
    memory_format_for,
)

DEFAULT_BATCH = 256  # train_stn's
MODES = ("eager", "graph", "compile", "compile+graph")

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device-name substring.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class TutorialNet(nn.Module):
    """The network of the PyTorch 'Spatial Transformer Networks Tutorial'."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def stn(self, x):
        xs = self.localization(x).flatten(1)  # the tutorial's .view(-1, 90), layout-agnostic
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x):
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        return F.log_softmax(self.fc2(x), dim=1)


def tutorial_pipeline(data, batch_size: int, device: torch.device, workers: int):
    """(step function, model) following the tutorial's training loop."""
    model = TutorialNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = (data.train_images.float() / 255 - MNIST_MEAN) / MNIST_STD
    loader = DataLoader(TensorDataset(images, data.train_labels), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    batches = iter(())

    def step():
        nonlocal batches
        try:
            inputs, target = next(batches)
        except StopIteration:
            batches = iter(loader)
            inputs, target = next(batches)
        inputs, target = inputs.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(inputs), target)
        loss.backward()
        optimizer.step()

    return step, model


def train_stn_pipeline(data, batch_size: int, device: torch.device, mode: str, model: nn.Module,
                       distortion: str):
    """(step function, model) running train_stn's own step (stn/training.py) on ``model``."""
    model = model.to(device, memory_format=memory_format_for(device))
    schedule = LrSchedule(device=device)
    optimizer = make_optimizer(model, schedule)
    net = torch.compile(model, dynamic=False) if mode.startswith("compile") else model
    on_device = data.to(device)
    sampler = BatchSampler(len(on_device.train_labels), batch_size, seed=0, device=device)
    stepper = TrainStep(net, optimizer, schedule, TrainMeter(device), on_device, sampler, distortion,
                        CounterRandom(mix_seed(0, "distort", 0), device), slice(0, batch_size), 0)
    if mode.endswith("graph"):
        stepper.use_graph(required=True)
    counter = 0

    def step():
        nonlocal counter
        stepper.run(counter)
        counter += 1

    return step, model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step, device: torch.device, seconds: float) -> float:
    """Average seconds per step over at least ``seconds`` of stepping."""
    synchronize(device)
    steps, started = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        if steps % 5 == 0:
            synchronize(device)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds:
                return elapsed / steps


def flops_per_step(model: nn.Module, batch_size: int, device: torch.device, size: int) -> float:
    inputs = torch.rand(batch_size, 1, size, size, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(inputs).float(), labels).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def pipelines_for(data, batch_size: int, device: torch.device, args) -> dict:
    """label -> ((step, model), canvas side), in the order the table prints them."""
    rows = {"PyTorch tutorial STN": (tutorial_pipeline(data, batch_size, device, args.workers), 28)}
    if not args.real_loop_only:
        rows["train_stn step, tutorial net"] = (
            train_stn_pipeline(data, batch_size, device, "eager", TutorialNet(), "none"), 28)
    for mode in args.modes:
        if not args.real_loop_only:
            rows[f"stcnn 28x28, {mode}"] = (
                train_stn_pipeline(data, batch_size, device, mode, build_model("stcnn", 28), "none"), 28)
        rts = canvas_size("RTS")
        rows[f"real loop RTS, {mode}"] = (
            train_stn_pipeline(data, batch_size, device, mode, build_model("stcnn", rts), "RTS"), rts)
    return rows


def warmup_steps(label: str, args) -> int:
    return args.warmup * (6 if "compile" in label else 1) + (5 if "graph" in label else 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dataset", choices=("mnist5k", "digits", "mnist"), default="mnist5k")
    parser.add_argument("--data-dir", default="data/mnist")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per pipeline and batch size")
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing rounds; the best one counts")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per row (more with compile)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, DEFAULT_BATCH])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the tutorial")
    parser.add_argument("--modes", nargs="+", choices=MODES,
                        help="train_stn step modes; default: eager (CPU), eager and graph (CUDA)")
    parser.add_argument("--compile", action="store_true", help="shorthand: add the compile modes")
    parser.add_argument("--real-loop-only", action="store_true",
                        help="only the tutorial and the job's real loop (RTS) rows")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    args.modes = args.modes or (["eager", "graph"] if use_cuda else ["eager"])
    if args.compile:
        args.modes += [m for m in ("compile", "compile+graph") if m not in args.modes]
    if not use_cuda and any("graph" in mode for mode in args.modes):
        parser.error("the graph modes need CUDA")
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    data = load_digits(args.dataset, args.data_dir)
    name = torch.cuda.get_device_name(device) if use_cuda else f"cpu, torch threads: {torch.get_num_threads()}"
    peak = next((flops for key, flops in PEAK_BF16.items() if use_cuda and key in name), None)
    print(f"device: {name} | torch {torch.__version__} | {args.dataset} | "
          f"best of {args.rounds} rounds, {args.seconds:g} s timed per row")

    header = f"{'batch':>5}  {'pipeline':<29} {'params':>8} {'GFLOP/step':>10} {'ms/step':>8} {'img/s':>9} " \
             f"{'TFLOP/s':>8} {'vs tutorial':>11}"
    if peak:
        header += f" {'of bf16 peak':>12}"
    print(header)
    tutorial, real_loop = {}, {}
    for batch_size in args.batch_sizes:
        torch.manual_seed(0)
        pipelines = pipelines_for(data, batch_size, device, args)
        for label, ((step, _), _) in pipelines.items():
            for _ in range(warmup_steps(label, args)):
                step()
        # Alternate short rounds and keep each pipeline's best, so a burst of load
        # from other processes does not land on one side of the comparison only.
        best = dict.fromkeys(pipelines, float("inf"))
        for _ in range(args.rounds):
            for label, ((step, _), _) in pipelines.items():
                best[label] = min(best[label], seconds_per_step(step, device, args.seconds / args.rounds))
        tutorial[batch_size] = batch_size / best["PyTorch tutorial STN"]
        for label, ((_, model), size) in pipelines.items():
            images_per_s = batch_size / best[label]
            if label.startswith("real loop"):
                real_loop[(batch_size, label)] = images_per_s
            flops = flops_per_step(model, batch_size, device, size)
            row = (f"{batch_size:>5}  {label:<29} {parameter_count(model):>8,} {flops / 1e9:>10.2f} "
                   f"{best[label] * 1e3:>8.2f} {images_per_s:>9,.0f} "
                   f"{flops / best[label] / 1e12:>8.3f} {images_per_s / tutorial[batch_size]:>10.2f}x")
            if peak:
                row += f" {flops / best[label] / peak:>12.2%}"
            print(row, flush=True)
    for (batch_size, label), images_per_s in real_loop.items():
        versus = [f"{images_per_s / tutorial[b]:.2f}x the tutorial at batch {b}" for b in (64, batch_size)
                  if b in tutorial]
        print(f"{label} at batch {batch_size}: {images_per_s:,.0f} img/s = {'; '.join(dict.fromkeys(versus))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
