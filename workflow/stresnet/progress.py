"""Progress of a long loop: tqdm's bar on a terminal, periodic plain lines in a log file.

A job's log is a file, where a bar's carriage-return updates pile up into one enormous line;
there each report is one line, at most every `every` seconds and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm import tqdm

log = logging.getLogger("stresnet.progress")


class Progress:
    """Iterate over `iterable` reporting progress; `postfix(**values)` adds figures to the reports."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None = None, unit: str = "it",
                 initial: int = 0, every: float = 30.0, enabled: bool = True, terminal: bool | None = None):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.initial, self.enabled = initial, enabled
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.values: dict[str, Any] = {}
        self.bar = None

    def postfix(self, **values: Any) -> None:
        self.values.update(values)
        if self.bar is not None:
            self.bar.set_postfix({k: _fmt(v) for k, v in self.values.items()}, refresh=False)

    def __iter__(self) -> Iterator:
        if not self.enabled:
            yield from self.iterable
            return
        if self.terminal:
            self.bar = tqdm(self.iterable, desc=self.desc, total=self.total, initial=self.initial, unit=self.unit,
                            mininterval=1)
            yield from self.bar
            return
        start = last = time.monotonic()
        done = 0
        for item in self.iterable:
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= self.every:
                self._report(done, now - start)
                last = now
        self._report(done, time.monotonic() - start)

    def _report(self, done: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        position = self.initial + done
        parts = [f"{self.desc}: {position}" + (f"/{self.total} ({100 * position / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"eta {(self.total - position) / rate:.0f} s")
        parts += [f"{k} {_fmt(v)}" for k, v in self.values.items()]
        log.info(", ".join(parts))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
