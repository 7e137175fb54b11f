"""Nonsense settings stopped or named before the first step, and a diverging phase stopped at
once: one line each, figures worked out by hand."""

import numpy as np
import pytest
import yaml

from conftest import REPO
from stresnet.batching import inference_bytes, training_bytes
from stresnet.config import config_error
from stresnet.evaluate import chunk_warnings
from stresnet.train import data_warnings
from test_train import PHASE, SPEED, train_cmd

from test_integrity import stresnet

def error_line(result, *names):
    """A refused run: exit 1, no traceback, its last line (after the log's head) the one error."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("stresnet train: ") and all(n in line for n in names), line
    return line


PAPER_ST = {"batch": 128, "bn_batch": 4, "chunks": 5, "stride": [5, 15], "size": 224}


def test_memory_estimates_scale_with_clips_chunks_streams_and_pixels():
    # 2 streams x 4 clips x 5 chunks = 40 images of 224 x 224 at 120 MB each (fp32) = 4.8 GB
    assert training_bytes(2, 4, 5, 224, half=False) == pytest.approx(4.8e9)
    assert training_bytes(2, 4, 5, 448, half=True) == pytest.approx(4.8e9 * 4 / 2)  # 4x the pixels, bf16
    # one flip of 25 whole 256 x 341 chunks at 660 bytes per pixel: 25 * 87,296 * 660 = 1.44 GB
    assert inference_bytes(25, 256, 341, half=False) == pytest.approx(1_440_384_000)


def test_settings_wasteful_for_the_data_are_named():
    assert data_warnings("st_resnet", PAPER_ST, np.array([300, 150]), 256) == []
    # 24 frames: 23 flow fields, whole stacks around frames 5 ... 18, 14 usable frames;
    # 50 chunks at stride 10 span 49 * 10 + 1 = 491 frames
    lines = data_warnings("st_resnet", {**PAPER_ST, "chunks": 50, "stride": [10, 20], "size": 500},
                          np.array([24, 20]), 64)
    assert lines == [
        "train.st_resnet.size 500 exceeds the frames' short side 64: every crop is upscaled (the paper crops 224 "
        "from frames of short side 256)",
        "train.st_resnet: 50 chunks at stride >= 10 span 491 frames, the longest training video has 14 usable "
        "frames: strides are reduced and frames repeat (lower chunks or stride)"]
    # the appearance stream reads no flow: all 24 frames are usable, 11 chunks at stride 2 span 21
    assert data_warnings("appearance", {**PAPER_ST, "chunks": 11, "stride": [2, 2]}, np.array([24]), 256) == []
    assert chunk_warnings(25, np.array([300])) == []
    assert chunk_warnings(1000, np.array([24, 20])) == [
        "evaluate.chunks 1000 exceeds the usable frames of every test video (at most 14): frames repeat in each "
        "(the paper tests 25)"]


def test_a_pass_that_cannot_fit_is_refused_before_the_first_step(prepared, tmp_path):
    # 2 clips (the micro-batch) x 1 chunk x 1 stream x (5000 / 224)^2 x 120 MB = 119.6 GB
    result = stresnet(*train_cmd(prepared, tmp_path / "huge", settings={**PHASE, "size": 5000})[3:])
    line = error_line(result, "train.motion: a pass of 2 clips x 1 chunks at 5000 px needs about 119.6 GB",
                    "lower train.motion.size")
    assert "GB are free on cpu" in line and not (tmp_path / "huge" / "model.pt").exists()


def test_a_diverging_phase_stops_at_once_without_a_model(prepared, tmp_path):
    result = stresnet(*train_cmd(prepared, tmp_path / "nan", settings={**PHASE, "lr": [[1.0e6, 6]]},
                                 speed={**SPEED, "checkpoint_every": 100})[3:])
    line = error_line(result, "train.motion.lr: the loss is", "(learning rate 1e+06); the phase stopped and wrote no "
                    "model.pt")
    step = int(line.split(" at step ")[1].split()[0])
    assert 2 <= step <= 6  # step 1's loss comes before any update; a later one is not finite
    assert not (tmp_path / "nan" / "model.pt").exists()


SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("change, message", [
    (lambda c: c["train"]["motion"].update(batch=-4), "config key train.motion.batch: -4 is less than the minimum of 1"),
    (lambda c: c["train"]["motion"].update(bacth=4), "config key train.motion.bacth: unknown key; did you mean 'batch'?"),
    (lambda c: c["train"]["motion"].update(lr=[[0, 3]]),
     "config key train.motion.lr[0][0]: 0 is less than or equal to the minimum of 0"),
    (lambda c: c["datasets"]["demo"]["train"]["st_resnet"].update(size=8),
     "config key datasets.demo.train.st_resnet.size: 8 is less than the minimum of 16"),
    (lambda c: c["train"]["appearance"].update(micro_batch="big"),
     "config key train.appearance.micro_batch: 'big' is not an integer >= 1 or 'auto'"),
    (lambda c: c["train"]["st_resnet_star"].update(init_from="x.pt"),
     "config key train.st_resnet_star.init_from: not allowed here; st_resnet and st_resnet_star start from"),
    (lambda c: c["flow"]["tvl1_torch"].update(tau=-1),
     "config key flow.tvl1_torch.tau: -1 is less than or equal to the minimum of 0"),
    (lambda c: c["train"].update(gpus=-1), "config key train.gpus: -1 is less than the minimum of 0"),
])
def test_config_errors_name_the_key_written_its_value_and_the_allowed_range(change, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    change(config)
    assert config_error(config, SCHEMA).startswith(message)


def test_defaults_are_those_snakemakes_validate_fills_in():
    """fill_defaults (the schema read once, with libyaml) gives the config Snakemake's own
    validate() gives, for the repository's config and for one that leaves nearly all out."""
    import copy

    from snakemake.utils import validate
    from stresnet.config import fill_defaults

    full = yaml.safe_load((REPO / "config.yaml").read_text())
    sparse = {k: full[k] for k in ("index", "frames", "flow", "train", "evaluate")}  # no smoke, no fetch
    sparse["datasets"] = {"u": {"format": "ucf101", "root": "raw/UCF-101", "splits": "raw/lists",
                                "train": {"motion": {"lr": [[0.01, 5]]}}},
                          "d": {"format": "demo", "demo": {"groups": 4}, "external_scores": [{"name": "x", "path": "x.npz"}]}}
    sparse["targets"] = ["d"]
    for config in (full, sparse):
        ours, theirs = copy.deepcopy(config), copy.deepcopy(config)
        fill_defaults(ours, SCHEMA)
        validate(theirs, str(SCHEMA))
        assert ours == theirs
    assert ours["datasets"]["d"]["demo"] == {"groups": 4, "seed": 0, "clips_per_group": 2, "frames": 24,
                                             "width": 128, "height": 96}  # the schema's defaults, by hand
    assert ours["datasets"]["d"]["external_scores"][0]["weight"] == 1.0
    assert ours["smoke"] == 0 and ours["fetch"] == {"max_unpacked_gb": 2000, "max_members": 1000000}
    ours["fetch"]["max_members"] = 9  # a default filled in is the config's own, not the schema's
    again = copy.deepcopy(sparse)
    fill_defaults(again, SCHEMA)
    assert again["fetch"]["max_members"] == 1000000


def test_loader_workers_keep_up_with_the_model_by_phase():
    from stresnet.config import loader_workers

    # an A100's 2,600 images/s over one worker's clips/s: motion 2600 / 125 = 20.8 (16 at most),
    # appearance 2600 / 600 = 4.3, ST-ResNet 260 / 21 = 12.4, ST-ResNet* 2600 / 22 / 9.5 = 12.4
    assert {p: loader_workers("auto", p, gpus=1) for p in ("motion", "appearance", "st_resnet", "st_resnet_star")} == {
        "motion": 16, "appearance": 5, "st_resnet": 13, "st_resnet_star": 13}
    assert loader_workers("auto", "st_resnet", gpus=0) == 2 and loader_workers(3, "motion", gpus=4) == 3
