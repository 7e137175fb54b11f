"""Report items: Table 3 as a table, per-class accuracy and most-confused pairs, training curves
per phase (each on its own axes), and a confusion matrix that stays readable at 101 classes."""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .index import class_names, read_table  # noqa: E402
from .errors import run_stage
from .metrics import aggregate, confusion  # noqa: E402

# Table 3 of the paper (mean over the three splits), for datasets in the official formats, and
# Table 4 (right): ST-ResNet* fused with IDT's scores (an external source named `idt`)
PAPER = {"ucf101": {"appearance": 82.29, "motion": 79.05, "two_stream": 89.47, "st_resnet": 92.76,
                    "st_resnet_star": 93.46, "st_resnet_star+idt": 94.6},
         "hmdb51": {"appearance": 43.42, "motion": 55.47, "two_stream": 60.59, "st_resnet": 65.57,
                    "st_resnet_star": 66.41, "st_resnet_star+idt": 70.3}}
STYLE = ("<style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
         "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}"
         "td:first-child,th:first-child{text-align:left}</style>")


def html_table(title: str, header: list[str], rows: list[list[object]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<h3>{html.escape(title)}</h3><table><tr>{cells}</tr>{body}</table>"


def table3_html(dataset: str, fmt: str, splits: list[int], per_split: list[dict]) -> str:
    """Table 3's rows (and those of fusions with external scores): top-1 of each split, their
    mean and spread, top-5 and mean class accuracy; a note names the classes without a test video."""
    paper = PAPER.get(fmt, {})
    header = ["stage", *[f"split {k} top-1" for k in splits], "mean top-1", "spread (std)", "mean top-5",
              "mean class acc.", *(["paper (Tables 3, 4)"] if paper else [])]
    table = aggregate(per_split)["table3"]
    rows = [[stage, *(f"{v:.1f}" for v in row["top1_per_split"]), f"{row['top1']:.1f}",
             f"{np.std(row['top1_per_split']):.1f}", f"{row['top5']:.1f}", f"{row['mean_class_accuracy']:.1f}",
             *([f"{paper[stage]:.2f}" if stage in paper else ""] if paper else [])] for stage, row in table.items()]
    smoke = next((m["smoke"]["note"] for m in per_split if "smoke" in m), "")
    banner = f"<p><b>{smoke}</b></p>" if smoke else ""
    return (STYLE + banner + html_table(f"Table 3, {dataset}: accuracy (%) on the test videos", header, rows)
            + untested_note(splits, table))


def untested_note(splits: list[int], table: dict) -> str:
    """A line naming each split's classes without a test video, which mean class accuracy leaves out."""
    untested = {k: sorted({c for row in table.values() for c in row["classes_without_test_videos_per_split"][i] or []})
                for i, k in enumerate(splits)}
    counts = next(iter(table.values()))["mean_class_accuracy_classes_per_split"]
    if not any(untested.values()):
        return ""
    named = "; ".join(f"split {k}: {', '.join(names)}" for k, names in untested.items() if names)
    over = ", ".join(f"{n} in split {k}" for k, n in zip(splits, counts))
    return html_paragraph(f"No test video of some classes ({named}): per-class and mean class accuracy "
                          f"leave them out (mean class accuracy over the classes with test videos: {over}).")


def html_paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def per_class_html(scores: Path, classes: list[str], pairs: int = 15) -> str:
    """Per-class top-1 of the final model, worst first (ties in label order), the classes without a
    test video, and the most confused class pairs."""
    data = np.load(scores)
    matrix = confusion(data["fused"], data["labels"], len(classes))
    videos = matrix.sum(1)
    order = np.argsort(np.diag(matrix) / np.maximum(videos, 1), kind="stable")
    accuracy = [[classes[c], int(videos[c]), f"{100 * matrix[c, c] / videos[c]:.1f}"] for c in order if videos[c]]
    untested = [classes[c] for c in range(len(classes)) if not videos[c]]
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    worst = np.dstack(np.unravel_index(np.argsort(-off, axis=None, kind="stable"), off.shape))[0][:pairs]
    confused = [[classes[t], classes[p], int(off[t, p]), f"{100 * off[t, p] / videos[t]:.1f}"]
                for t, p in worst if off[t, p]]
    note = html_paragraph(f"No test video, left out: {', '.join(untested)}") if untested else ""
    return STYLE + html_table(f"{Path(scores).stem}: per-class top-1 (%), worst first",
                              ["class", "test videos", "top-1"], accuracy) + note + html_table(
        "most confused pairs", ["true class", "predicted as", "videos", "% of the class"], confused)


def phase_curves_figure(curves: Path) -> plt.Figure:
    """Loss, accuracy (mean of 5 steps) and learning rate of one phase, each on its own axes: what
    each shows in the axes' title, short axis labels, laid out to fit the figure."""
    table = pd.read_csv(curves)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    axes[0].plot(table["step"], table["loss"])
    axes[0].set(title="loss, summed over positions and streams", ylabel="loss", yscale="log")
    axes[1].plot(table["step"], table["accuracy"].rolling(5, min_periods=1).mean())
    axes[1].set(title="training accuracy, mean of 5 steps", ylabel="accuracy", ylim=(0, 1))
    axes[2].plot(table["step"], table["lr"])
    axes[2].set(title="learning rate", ylabel="learning rate", yscale="log")
    for ax in axes:
        ax.set(xlabel="SGD step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(curves).parent.name}: {len(table)} steps")
    return fig


def plot_phase_curves(curves: Path, out: Path) -> None:
    fig = phase_curves_figure(curves)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_confusion(scores: Path, classes: list[str], out: Path) -> None:
    """Row-normalised confusion matrix; every class labelled, the font shrinking with the count."""
    data = np.load(scores)
    matrix = confusion(data["fused"], data["labels"], len(classes))
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(classes)
    side = min(40, max(5, 0.16 * n + 3))
    font = 7 if n <= 30 else max(3, 7 - n // 30)
    fig, ax = plt.subplots(figsize=(side, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90, fontsize=font)
    ax.set_yticks(range(n), classes, fontsize=font)
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the true class")
    accuracy = 100 * np.trace(matrix) / max(matrix.sum(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"{Path(scores).stem}: top-1 {accuracy:.1f}%")
    fig.tight_layout()
    fig.savefig(out, dpi=100 if n <= 51 else 150)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet report", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="one split's curves, confusion matrix and per-class tables")
    s.add_argument("--curves", nargs="+", required=True, help="curves.csv of each phase")
    s.add_argument("--scores", required=True, help="scores NPZ of the final model")
    s.add_argument("--classes", required=True, help="classes.csv (class names by label)")
    s.add_argument("--out-curves", nargs="+", required=True, help="one PNG per curves.csv")
    s.add_argument("--out-confusion", required=True)
    s.add_argument("--out-classes", required=True, help="HTML of per-class accuracy and confused pairs")
    t = sub.add_parser("table3", help="Table 3 of a dataset as HTML")
    t.add_argument("--metrics", nargs="+", required=True, help="metrics.json of each split")
    t.add_argument("--splits", nargs="+", type=int, required=True)
    t.add_argument("--dataset", required=True)
    t.add_argument("--format", required=True)
    t.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    if a.command == "table3":
        per_split = [json.loads(Path(m).read_text()) for m in a.metrics]
        Path(a.out).write_text(table3_html(a.dataset, a.format, a.splits, per_split))
        return
    if len(a.curves) != len(a.out_curves):
        raise SystemExit("stresnet report: --curves and --out-curves must pair up")
    classes = class_names(read_table(a.classes))
    for curves, out in zip(a.curves, a.out_curves):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        plot_phase_curves(Path(curves), Path(out))
    plot_confusion(Path(a.scores), classes, Path(a.out_confusion))
    Path(a.out_classes).write_text(per_class_html(Path(a.scores), classes))


if __name__ == "__main__":
    run_stage("report", main)
