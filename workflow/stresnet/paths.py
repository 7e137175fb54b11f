"""Every path under results/, defined once: the rules call these with wildcard names
("{dataset}") to get their patterns, the package with real values.

Stages pass each other files (manifests, shards, models), never folders; a stage that needs
the files of an earlier stage reads them from that stage's manifest.
"""

from __future__ import annotations

RESULTS = "results"
BASE_RESULTS = RESULTS  # what smoke runs share with real ones (the ImageNet weights)
# smoke runs (config `smoke: N`) write here, never beside real results
SMOKE_RESULTS = "results/smoke"


def use_smoke_results() -> None:
    """Put every path of this process under SMOKE_RESULTS (the workflow does so for a smoke run)."""
    global RESULTS
    RESULTS = SMOKE_RESULTS
PHASES = ("motion", "appearance", "st_resnet", "st_resnet_star")
EVALUATED = ("two_stream", "st_resnet", "st_resnet_star")
# Table 3's columns: which saved scores (evaluated kind, part) give each stage
STAGES = {"appearance": ("two_stream", "appearance"), "motion": ("two_stream", "motion"),
          "two_stream": ("two_stream", "fused"), "st_resnet": ("st_resnet", "fused"),
          "st_resnet_star": ("st_resnet_star", "fused")}


def imagenet_weights() -> str:
    """torchvision's ImageNet ResNet-50 weights (IMAGENET1K_V1, whose file name this is), fetched
    once by a local rule for every dataset's `pretrained: imagenet`."""
    return f"{BASE_RESULTS}/pretrained/resnet50-0676ba61.pth"


def dataset_dir(ds: str) -> str:
    return f"{RESULTS}/{ds}"


def raw_dir(ds: str) -> str:
    """Generated (demo) videos."""
    return f"{RESULTS}/{ds}/raw"


def download_dir(ds: str) -> str:
    """The unpacked archives of a dataset with a `url`."""
    return f"{RESULTS}/{ds}/download"


def download_partial_dir(ds: str) -> str:
    """Archives being downloaded (`.part` files) and downloaded but not yet unpacked: beside the
    fetch rule's output, not in it, so that Snakemake's removal of a failed job's output keeps
    them and the next run resumes."""
    return f"{RESULTS}/{ds}/download.partial"


def index_csv(ds: str) -> str:
    """Every video: path, class, label, split membership, shard."""
    return f"{RESULTS}/{ds}/index.csv"


def classes_csv(ds: str) -> str:
    """Every class of the dataset, label and name: the classifier's size and its names, whatever
    videos a run keeps (a smoke run's few, a dataset without its bad videos)."""
    return f"{RESULTS}/{ds}/classes.csv"


def index_summary(ds: str) -> str:
    """What the index will make: jobs and estimated disk (stresnet summary)."""
    return f"{RESULTS}/{ds}/index_summary.json"


def frame_shard(ds: str, shard: str) -> str:
    return f"{RESULTS}/{ds}/frames/{shard}.h5"


def frame_report(ds: str, shard: str) -> str:
    """What extraction found per video of a shard."""
    return f"{RESULTS}/{ds}/frames/{shard}.csv"


def videos_csv(ds: str) -> str:
    return f"{RESULTS}/{ds}/videos.csv"


def bad_videos_csv(ds: str) -> str:
    return f"{RESULTS}/{ds}/bad_videos.csv"


def frames_manifest(ds: str) -> str:
    """The frame stage's manifest, written only when the dataset may be trained on (the gate)."""
    return f"{RESULTS}/{ds}/dataset_ready.json"


def flow_shard(ds: str, method: str, shard: str) -> str:
    return f"{RESULTS}/{ds}/flow/{method}/{shard}.h5"


def flow_manifest(ds: str, method: str) -> str:
    return f"{RESULTS}/{ds}/flow/{method}/manifest.json"


def verified(ds: str) -> str:
    """What `stresnet verify` found of the dataset's stored frames and flow (written when intact)."""
    return f"{RESULTS}/{ds}/verified.json"


def split_dir(ds: str, split: str | int) -> str:
    return f"{RESULTS}/{ds}/split{split}"


def model(ds: str, split: str | int, phase: str) -> str:
    return f"{split_dir(ds, split)}/{phase}/model.pt"


def curves(ds: str, split: str | int, phase: str) -> str:
    return f"{split_dir(ds, split)}/{phase}/curves.csv"


def scores(ds: str, split: str | int, kind: str) -> str:
    return f"{split_dir(ds, split)}/scores/{kind}.npz"


def fused_scores(ds: str, split: str | int) -> str:
    """ST-ResNet*'s scores fused with the dataset's `external_scores` (Table 4, right)."""
    return scores(ds, split, "st_resnet_star_external")


def exported_scores(ds: str, split: str | int, kind: str, part: str) -> str:
    """One array of a scores file in the external score format (`stresnet fuse export`)."""
    return f"{split_dir(ds, split)}/scores/exported/{kind}/{part}.csv"


def split_metrics(ds: str, split: str | int) -> str:
    return f"{split_dir(ds, split)}/metrics.json"


def test_board(ds: str, split: str | int) -> str:
    """TensorBoard event files of the split's test figures (those of training: <phase>/tensorboard)."""
    return f"{split_dir(ds, split)}/tensorboard/test"


def plot(ds: str, split: str | int, name: str) -> str:
    return f"{split_dir(ds, split)}/plots/{name}.png"


def per_class(ds: str, split: str | int) -> str:
    """Per-class accuracy and most-confused pairs of the final model (HTML)."""
    return f"{split_dir(ds, split)}/per_class.html"


def table3(ds: str) -> str:
    """Table 3 of the dataset: each split, the mean and the spread (HTML)."""
    return f"{RESULTS}/{ds}/table3.html"


def metrics(ds: str) -> str:
    """The mean over the splits run (Table 3)."""
    return f"{RESULTS}/{ds}/metrics.json"


def log(ds: str, job: str) -> str:
    return f"{RESULTS}/{ds}/logs/{job}.log"


def benchmark(ds: str, job: str) -> str:
    return f"{RESULTS}/{ds}/benchmarks/{job}.tsv"
