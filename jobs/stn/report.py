"""What a run reports as it goes and at its end: the progress line and metrics row at each log interval
(the step loop's one host sync), then curves.png, stn_grid.png and summary.json."""
from __future__ import annotations

import os
import time

import torch

from stn.artifacts import (
    CURVES,
    METRICS,
    STN_GRID,
    SUMMARY,
    plot_curves,
    save_figure,
    stn_grid_figure,
    write_json_atomic,
)
from stn.model import parameter_count
from stn.runtime import describe, log


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def report_progress(rt, metrics, board, meter, schedule, step, total_steps, steps_per_epoch,
                    seconds, images_done, batch_size, started) -> dict:
    """Reduce the train sums, write the metrics row and print the progress line; the one host sync."""
    train_loss, train_acc = meter.take(rt.distributed)
    if rt.is_main:
        lr = schedule.lr.item()  # the lr of the step just taken
        speed = images_done / max(seconds, 1e-9)
        elapsed = time.perf_counter() - started
        seconds_per_step = seconds / max(images_done / batch_size, 1)
        metrics.write({"kind": "train", "step": step, "epoch": step / steps_per_epoch, "loss": train_loss,
                       "acc": train_acc, "lr": lr, "images_per_s": speed, "elapsed_s": elapsed})
        board.scalars(step, {"train/loss": train_loss, "train/accuracy": train_acc, "lr": lr,
                             "images_per_s": speed})
        width = len(str(total_steps))
        log(rt, f"step {step:>{width}}/{total_steps} | loss {train_loss:.4f} | acc {train_acc:6.2%} "
                f"| lr {lr:.2e} | {speed:,.0f} img/s | elapsed {format_duration(elapsed)} "
                f"| eta {format_duration((total_steps - step) * seconds_per_step)}")
    return {"loss": train_loss, "acc": train_acc}


def first_of_each_class(labels: torch.Tensor) -> list[int]:
    return [int(torch.nonzero(labels == digit)[0]) for digit in labels.unique().tolist()]


def write_artifacts(args, rt, model, test_images, test_labels, step, test_error, last_train, clock, started,
                    board, resumed_from, step_mode: dict) -> None:
    """curves.png, stn_grid.png and summary.json (rank 0 only)."""
    title = f"{args.model} on {args.dataset} with distortion {args.distortion}"
    plot_curves(os.path.join(args.out, METRICS), os.path.join(args.out, CURVES), title)
    inputs = test_images[first_of_each_class(test_labels)]
    if model.transformer is not None:
        with torch.no_grad():
            transformed = model.transformer(inputs)
        grid_note = "top: test inputs, bottom: what the spatial transformer feeds the classifier"
    else:
        transformed = None
        grid_note = f"{args.model} has no spatial transformer: test inputs only"
    fig = stn_grid_figure(inputs, transformed, f"{title}\n{grid_note}")
    board.figure("stn_grid", fig, step)
    save_figure(fig, os.path.join(args.out, STN_GRID))
    summary = {
        "test_error": test_error,
        "final_train_loss": last_train["loss"],
        "final_train_acc": last_train["acc"],
        "images_per_s": clock.images / clock.seconds if clock.seconds else 0.0,
        "steps": step,
        "resumed_from_step": resumed_from,
        "wall_s": time.perf_counter() - started,
        "train_s": clock.seconds,
        "device": describe(rt.device),
        "world_size": rt.world_size,
        "model": args.model,
        "params": parameter_count(model),
        "distortion": args.distortion,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "compile": args.compile,
        **step_mode,
        "torch": torch.__version__,
        "stn_grid": grid_note,
    }
    write_json_atomic(os.path.join(args.out, SUMMARY), summary)
    log(rt, f"done: test error {test_error:.2%} after {step} steps, {summary['images_per_s']:,.0f} img/s, "
            f"wall {format_duration(summary['wall_s'])}; artifacts in {args.out}")
