"""Expected faults and how every command reports them.

An `InputError` is a fault of the input, not of the code: a broken video, a damaged or missing
file, a malformed split file, a wrong setting. Its message names the file or key, the cause and
what to do. Every stage's entry prints it as one line, `stresnet <stage>: <message>`, and exits
1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import sys
from typing import Callable


class InputError(Exception):
    """A fault of the input; the message names the file or key, the cause and what to do."""


class SettingError(InputError, ValueError):
    """A setting (flag or config value) that cannot be used."""


def run_stage(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main, reporting an InputError as one line and exit status 1."""
    # what the stage imported (torch and torchvision: over a million objects) lives as long as the
    # process: kept out of the collector's full passes, the one at exit too (1.2 CPU-s a process)
    gc.freeze()
    try:
        main()
    except InputError as e:
        message = str(e)
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the error
            message = message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"stresnet {stage}: {' '.join(message.split())}", file=sys.stderr)
        sys.exit(1)
