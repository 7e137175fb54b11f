"""TensorBoard event files: one folder per run (a training phase, a split's test figures), the
tags without the run's name so that runs of one split overlay (`train/loss` of every phase on one
chart), the files of an earlier run dropped when a run starts afresh, and a run's settings in the
HParams dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENT_FILES = "events.out.tfevents.*"


def open_board(folder: Path, afresh: bool):
    """A SummaryWriter of event files in `folder`. afresh: the event files of an earlier run go
    first, or TensorBoard would show their steps beside the new run's; a resumed run keeps them."""
    from torch.utils.tensorboard import SummaryWriter

    if afresh:
        for old in Path(folder).glob(EVENT_FILES):
            old.unlink()
    return SummaryWriter(str(folder))


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of hparams: keys joined with '.', numbers, text and booleans as
    they are, lists as JSON text (the HParams dashboard holds nothing else)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        elif value is not None:
            flat[name] = value
    return flat


def log_hparams(board, settings: dict[str, Any], metrics: list[str]) -> None:
    """A run's settings in the HParams dashboard, beside the last value of each of its `metrics`
    (scalar tags the run writes)."""
    from torch.utils.tensorboard.summary import hparams

    experiment, start, _ = hparams(flat_settings(settings), dict.fromkeys(metrics, 0.0))
    for summary in (experiment, start):
        board.file_writer.add_summary(summary)
