"""Weights stage: torchvision's ImageNet ResNet-50 weights, fetched once into a file the training
jobs read (`pretrained: imagenet`). The workflow runs it where Snakemake runs (a local rule), so
compute nodes without internet never download: they read the file.

The file is taken from torch's hub cache when it is there (a machine that loaded the weights
before), else downloaded and checked against the hash torchvision names it by.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from .errors import InputError, run_stage
from .models.streams import IMAGENET, imagenet_cache_file, load_weights_only
from .provenance import tmp_name

log = logging.getLogger(__name__)


def fetch_imagenet(out: Path, url: str = IMAGENET.url) -> str:
    """Put the ImageNet ResNet-50 state dict at `out`; returns where it came from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    cached = imagenet_cache_file()
    if cached.is_file():
        shutil.copyfile(cached, tmp)
        source = str(cached)
    else:
        try:  # torchvision's file names carry the first digits of their SHA-256: checked here
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=Path(url).stem.split("-")[-1], progress=False)
        except (OSError, RuntimeError) as e:
            tmp.unlink(missing_ok=True)
            raise InputError(f"{out}: cannot download the ImageNet ResNet-50 weights from {url} ({e}); on a machine "
                             f"with internet run `snakemake --cores 1 {out}` (or copy {cached.name} from a torch hub "
                             f"cache to {out}), or set train.pretrained: none") from None
        source = url
    try:
        state = load_weights_only(tmp, "ImageNet weights")
    except (ValueError, FileNotFoundError) as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{source}: not a weights-only torch file ({e}); delete it and rerun") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{source}: not a state dict of torchvision's resnet50; delete it and rerun")
    tmp.replace(out)
    return source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stresnet weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="file to write (the workflow: results/pretrained/<name>.pth)")
    p.add_argument("--url", default=IMAGENET.url, help="where torchvision publishes the weights")
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = build_parser().parse_args(argv)
    log.info("ImageNet ResNet-50 weights from %s -> %s", fetch_imagenet(Path(a.out), a.url), a.out)


if __name__ == "__main__":
    run_stage("weights", main)
