"""Plots: the training curves of the four phases and the confusion matrix of the final model."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .index import read_table  # noqa: E402
from .metrics import confusion  # noqa: E402


def plot_curves(curves: list[Path], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path in curves:
        table = pd.read_csv(path)
        name = Path(path).parent.name
        axes[0].plot(table["step"], table["loss"], label=name)
        axes[1].plot(table["step"], table["accuracy"].rolling(5, min_periods=1).mean(), label=name)
    axes[0].set(xlabel="SGD step", ylabel="training loss (summed over streams)", yscale="log")
    axes[1].set(xlabel="SGD step", ylabel="training accuracy (mean of 5 steps)", ylim=(0, 1))
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion(scores: Path, classes: list[str], out: Path) -> None:
    data = np.load(scores)
    matrix = confusion(data["fused"], data["labels"], len(classes))
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = max(5, 0.12 * len(classes) + 3)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 30:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    accuracy = 100 * np.trace(matrix) / max(matrix.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"{Path(scores).stem}: top-1 {accuracy:.1f}%")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="stresnet report", description=__doc__)
    p.add_argument("--curves", nargs="+", required=True, help="curves.csv of each phase")
    p.add_argument("--scores", required=True, help="scores NPZ of the model for the confusion matrix")
    p.add_argument("--classes", required=True, help="videos.csv (class names by label)")
    p.add_argument("--out-curves", required=True)
    p.add_argument("--out-confusion", required=True)
    a = p.parse_args(argv)
    videos = read_table(a.classes)
    classes = list(videos.sort_values("label").drop_duplicates("label")["class"])
    Path(a.out_curves).parent.mkdir(parents=True, exist_ok=True)
    plot_curves([Path(c) for c in a.curves], Path(a.out_curves))
    plot_confusion(Path(a.scores), classes, Path(a.out_confusion))


if __name__ == "__main__":
    main()
