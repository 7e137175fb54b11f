"""torch.compile with a way out: the unfused function where compilation fails."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


class Fused:
    """A function run through torch.compile (one graph for every batch and image size), or
    as it is where compilation fails (no C++ compiler, no Triton): the unfused path, warned once."""

    def __init__(self, fn: Callable[..., Any]):
        compile_cache()
        self.fn, self.compiled = fn, torch.compile(fn, dynamic=True)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except torch.OutOfMemoryError:  # the run's, not the compiler's: probing micro-batches meets it
                raise
            except Exception as e:  # noqa: BLE001 - any failure of the compiler; eager reraises real faults
                log.warning("torch.compile failed for %s (%s); running it unfused",
                            self.fn.__name__, str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.compiled = None
        return self.fn(*args)


def compile_cache() -> str:
    """The folder of torch.compile's caches (inductor's FX graph and AOT autograd caches and the
    Triton kernels, which torch keeps under one folder): TORCHINDUCTOR_CACHE_DIR where set; else
    stresnet/torchinductor in the user's cache folder (XDG_CACHE_HOME or ~/.cache), set here for
    this process, so that every job of a user finds what an earlier job compiled, on a cluster
    too, where home folders are shared and each node's /tmp (torch's default) is not."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(base, "stresnet", "torchinductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]
