"""`stresnet <stage> ...`: the one entry point; each stage is also `python -m stresnet.<stage>`."""

from __future__ import annotations

import importlib
import sys

from . import __version__
from .errors import run_stage

STAGES = {
    "demo": "generate the synthetic demo dataset",
    "fetch": "download and unpack an official dataset archive",
    "weights": "fetch torchvision's ImageNet ResNet-50 weights once, for pretrained: imagenet",
    "index": "list videos and splits, assign shards; merge and check extraction reports",
    "summary": "what an index will make: videos, frame and flow jobs, estimated disk",
    "frames": "extract the JPEG frames of one shard into HDF5",
    "flow": "compute the clipped, quantised optical flow of one frame shard into HDF5",
    "flowviz": "render stored flow fields as colour images beside their frames (PNG)",
    "train": "train one phase of Table 2 (motion, appearance, st_resnet, st_resnet_star)",
    "evaluate": "fully convolutional testing of a trained model on a split's test videos",
    "fuse": "late fusion of ST-ResNet*'s scores with external ones (Table 4, right); export scores",
    "metrics": "Table 3's figures of a split from the saved scores; the mean over splits",
    "report": "plots: training curves and the confusion matrix",
    "predict": "top-5 classes of one video file with a trained model folder",
    "verify": "check a dataset's stored frames, flow and models byte for byte; list what is damaged",
    "devices": "run a command on GPUs of its own (CUDA_VISIBLE_DEVICES from a locked pool)",
}


def usage() -> str:
    lines = "\n".join(f"  {name:8s} {text}" for name, text in STAGES.items())
    return (f"usage: stresnet <stage> [options]  (stresnet <stage> --help: the stage's options)\n"
            f"       stresnet --help | --version\n\nstages:\n{lines}")


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a stage; --help and --version print to stdout and exit 0, a missing or unknown
    stage prints the usage to stderr and exits 2 (as argparse does)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0)
    if argv and argv[0] == "--version":
        print(f"stresnet {__version__}")
        sys.exit(0)
    if not argv or argv[0] not in STAGES:
        unknown = f"\nstresnet: error: unknown stage {argv[0]!r}" if argv else "\nstresnet: error: no stage given"
        print(usage() + unknown, file=sys.stderr)
        sys.exit(2)
    stage = importlib.import_module(f"stresnet.{argv[0]}")
    run_stage(argv[0], lambda: stage.main(argv[1:]))


if __name__ == "__main__":
    main()
