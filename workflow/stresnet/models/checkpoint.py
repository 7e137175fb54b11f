"""Checkpoints of every model kind: the state dict beside the arguments that rebuild the model."""

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torchvision.models import ResNet

from .st_resnet import STResNet, TwoStream, st_resnet, two_stream
from .streams import appearance_stream, load_weights_only, motion_stream
from .temporal import TemporalMaxPool
from ..errors import InputError
from ..provenance import tmp_name

KINDS = ("appearance", "motion", "two_stream", "st_resnet", "st_resnet_star")


class CheckpointError(InputError, ValueError):
    """A model file that is not a checkpoint of the kind expected, or whose weights changed."""


def content_digest(obj: Any) -> str:
    """SHA-256 of everything a checkpoint holds: nested dicts (keys sorted), lists, strings,
    numbers and tensors (dtype, shape, bytes). Checked on every load, so that a changed byte
    anywhere (a weight, a class name, the identity a later stage compares) is refused."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=repr):
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"L{len(obj)}|".encode())
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, str):
        data = obj.encode()
        digest.update(f"S{len(data)}|".encode() + data)
    elif obj is None or isinstance(obj, (bool, int, float)):
        digest.update(f"{type(obj).__name__}:{obj!r}|".encode())
    else:
        raise TypeError(f"cannot digest a {type(obj).__name__} in a checkpoint")


class Checkpoint(NamedTuple):
    model: nn.Module
    meta: dict[str, Any]  # kind and shape arguments, as model_meta() gives them
    extra: dict[str, Any]  # what the caller saved beside the model (step, optimizer, config)


def model_meta(model: nn.Module) -> dict[str, Any]:
    """The kind of `model` and the arguments that rebuild it; JSON-serialisable."""
    if isinstance(model, ResNet):
        channels = model.conv1.in_channels
        if channels == 3:
            return {"kind": "appearance", "num_classes": model.fc.out_features}
        return {"kind": "motion", "num_classes": model.fc.out_features, "flow_channels": channels}
    if not isinstance(model, TwoStream):
        raise TypeError(f"no checkpoint kind for a {type(model).__name__}")
    num_classes = model.appearance.fc.out_features
    if model.motion.fc.out_features != num_classes:
        raise ValueError("the two streams classify a different number of classes")
    meta = {"num_classes": num_classes, "flow_channels": model.motion.conv1.in_channels}
    pool = model.temporal_pool
    if isinstance(model, STResNet) and isinstance(pool, TemporalMaxPool):
        return {"kind": "st_resnet_star", **meta, "pool_window": pool.window, "pool_stride": pool.stride}
    if not isinstance(pool, nn.Identity):
        raise TypeError(f"no checkpoint kind for a {type(model).__name__} with {pool}")
    return {"kind": "st_resnet" if isinstance(model, STResNet) else "two_stream", **meta}


def build_model(meta: dict[str, Any]) -> nn.Module:
    """A randomly initialised model of the kind and shape that `meta` describes."""
    kind, num_classes = meta["kind"], meta["num_classes"]
    if kind == "appearance":
        return appearance_stream(num_classes, pretrained="none")
    motion = motion_stream(num_classes, pretrained="none", flow_channels=meta["flow_channels"])
    if kind == "motion":
        return motion
    appearance = appearance_stream(num_classes, pretrained="none")
    if kind == "two_stream":
        return two_stream(appearance, motion)
    if kind == "st_resnet":
        return st_resnet(appearance, motion)
    if kind == "st_resnet_star":
        return st_resnet(appearance, motion, TemporalMaxPool(meta["pool_window"], meta["pool_stride"]))
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")


def save_checkpoint(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> None:
    """Write `model` (and `extra`: tensors, numbers, strings, lists, dicts) to `path` atomically."""
    path = Path(path)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    tmp = tmp_name(path)
    content = {"meta": model_meta(model), "state_dict": state, "extra": extra or {}}
    torch.save({**content, "sha256": content_digest(content)}, tmp)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(tmp)
    if unsafe:  # fail now rather than when the weights-only load refuses the file
        tmp.unlink()
        raise TypeError(f"extra holds objects that weights-only loading refuses: {unsafe}")
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        ckpt = load_weights_only(path, "checkpoint")
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from e
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("meta"), dict) and ckpt["meta"].get("kind") in KINDS
            and isinstance(ckpt.get("state_dict"), dict)):
        raise CheckpointError(f"{path} is not a stresnet model checkpoint (no model kind in it)")
    content = {key: ckpt.get(key) for key in ("meta", "state_dict", "extra")}
    if ckpt.get("sha256") != content_digest(content):
        raise CheckpointError(f"{path}: its contents differ from the digest saved with them (damaged, or written "
                              f"by another version); rebuild it: snakemake --force {path}, then snakemake")
    return ckpt


def _load_state(model: nn.Module, ckpt: dict[str, Any], path: Path, assign: bool = False) -> None:
    try:
        model.load_state_dict(ckpt["state_dict"], assign=assign)
    except RuntimeError as err:
        kind = ckpt["meta"]["kind"]
        raise CheckpointError(f"{path}: its weights do not fit the {kind} model its metadata names: {err}") from err


def load_checkpoint(path: str | Path, kind: str | None = None) -> Checkpoint:
    """Rebuild the model saved at `path`; with `kind`, refuse a checkpoint of another kind."""
    path = Path(path)
    ckpt = _read(path)
    saved = ckpt["meta"]["kind"]
    if kind is not None and saved != kind:
        raise CheckpointError(f"{path} holds a {saved} model, not the {kind} model expected")
    # built on the meta device, then given the saved tensors: no random initialisation that the
    # weights would replace (0.3 s a stream, in every evaluation and every phase started from models)
    with torch.device("meta"):
        model = build_model(ckpt["meta"])
    _load_state(model, ckpt, path, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor the state_dict does not hold would be left without values
        raise CheckpointError(f"{path}: the {saved} model has tensors its checkpoint does not fill: {left[:3]}")
    return Checkpoint(model, ckpt["meta"], ckpt["extra"])


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load the checkpoint at `path` into `model` of the same kind and shape; returns its extra."""
    path = Path(path)
    ckpt = _read(path)
    saved, wanted = ckpt["meta"], model_meta(model)
    if saved != wanted:
        raise CheckpointError(
            f"{path} holds a {saved['kind']} model, cannot load it into a {wanted['kind']} model "
            f"(checkpoint {saved}, model {wanted})"
        )
    _load_state(model, ckpt, path)
    return ckpt["extra"]
