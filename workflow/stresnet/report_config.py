"""Whether results were made with the config a report is built with: each split's metrics.json
records the digest of its config (`config_digest`, the mean over splits all of them), and a
report built without the run's config file would otherwise show another config's results as
this one's."""

from __future__ import annotations

import json
from pathlib import Path

SAME_CONFIG = "this config"


def config_check(metrics: Path, digest: str) -> str:
    """SAME_CONFIG when the metrics.json (a split's or the mean's) was made with the config of
    `digest`; otherwise a warning naming both."""
    made = json.loads(Path(metrics).read_text())
    digests = made.get("config_digests") or [made["config_digest"]]
    if digests == [digest]:
        return SAME_CONFIG
    return (f"WARNING: made with another config (digest {', '.join(digests)}), not the one of this report "
            f"({digest}); build the report with the run's --configfile")
