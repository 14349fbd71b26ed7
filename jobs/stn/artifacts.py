"""What a run leaves behind: metrics.jsonl, curves.png, stn_grid.png, summary.json, TensorBoard events.

matplotlib (and TensorBoard) are imported lazily: the training loop must not
pay for them, and a worker rank that never plots never imports them.
"""

from __future__ import annotations

import json
import os

import torch

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
STN_GRID = "stn_grid.png"


class MetricsLog:
    """Append-only JSON-lines log of train and eval rows, one object per line."""

    def __init__(self, out_dir: str, resume_step: int):
        self.path = os.path.join(out_dir, METRICS)
        # Rows written after the checkpoint we resume from would be replayed: drop them.
        rows = [row for row in read_metrics(self.path) if row["step"] <= resume_step] if resume_step else []
        with open(self.path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        self._file = open(self.path, "a", buffering=1)

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json_atomic(path: str, payload: dict) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(temporary, path)


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_curves(metrics_path: str, png_path: str, title: str) -> None:
    """Loss (train and test) and error (train and test) against the step."""
    rows = read_metrics(metrics_path)
    train = [r for r in rows if r["kind"] == "train"]
    test = [r for r in rows if r["kind"] == "eval"]
    plt = _pyplot()
    fig, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    loss_ax.plot([r["step"] for r in test], [r["test_loss"] for r in test], "o-", label="test")
    loss_ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="loss")
    error_ax.plot([r["step"] for r in train], [100 * (1 - r["acc"]) for r in train], label="train")
    error_ax.plot([r["step"] for r in test], [100 * r["test_error"] for r in test], "o-", label="test")
    error_ax.set(xlabel="step", ylabel="error (%)", yscale="log", title="classification error")
    from matplotlib.ticker import FuncFormatter  # noqa: PLC0415

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for ax in (loss_ax, error_ax):
        low, high = ax.get_ylim()
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(_label_twos_and_fives) if high > 10 * low else plain)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def _label_twos_and_fives(value: float, _position) -> str:
    """Minor tick labels on a log axis: 0.2, 0.5, 2, 5, 20... but not every integer multiple."""
    leading = f"{value:.0e}"[0]
    return f"{value:g}" if leading in "25" else ""


def stn_grid_figure(inputs: torch.Tensor, transformed: torch.Tensor | None, title: str):
    """A figure with the inputs on the top row and, for ST models, the ST's outputs below."""
    plt = _pyplot()
    rows = 1 if transformed is None else 2
    count = inputs.shape[0]
    fig, axes = plt.subplots(rows, count, figsize=(1.2 * count, 1.4 * rows + 0.5), squeeze=False)
    for row, (label, images) in enumerate([("input", inputs), ("ST output", transformed)][:rows]):
        for column in range(count):
            ax = axes[row][column]
            ax.imshow(images[column, 0].float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(label)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, png_path: str) -> None:
    fig.savefig(png_path, dpi=100)
    _pyplot().close(fig)


class TensorBoard:
    """Scalars and the ST grid as TensorBoard events, when tensorboard is installed."""

    def __init__(self, out_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError:
            print("tensorboard not installed: skipping event files", flush=True)
            self._writer = None
        else:
            self._writer = SummaryWriter(log_dir=out_dir)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(name, value, step)

    def figure(self, tag: str, fig, step: int) -> None:
        if self._writer is not None:
            self._writer.add_figure(tag, fig, step, close=False)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
