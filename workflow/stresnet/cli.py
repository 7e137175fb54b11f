"""`stresnet <stage> ...`: the one entry point; each stage is also `python -m stresnet.<stage>`."""

from __future__ import annotations

import importlib
import sys

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


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in STAGES:
        lines = "\n".join(f"  {name:8s} {text}" for name, text in STAGES.items())
        print(f"usage: stresnet <stage> [options]\n\nstages:\n{lines}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    stage = importlib.import_module(f"stresnet.{argv[0]}")
    run_stage(argv[0], lambda: stage.main(argv[1:]))


if __name__ == "__main__":
    main()
