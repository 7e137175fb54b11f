"""ST-ResNet models: the two streams, their spatiotemporal conversion, sub-batch BN, checkpoints."""

from .checkpoint import KINDS, Checkpoint, build_model, load_checkpoint, load_weights, model_meta, save_checkpoint
from .fold import fold_batch_norm
from .st_resnet import (
    MotionResidual,
    PreActivation,
    STResNet,
    TwoStream,
    st_resnet,
    st_resnet_star,
    temporalize,
    two_stream,
)
from .streams import (
    DropoutClassifier,
    appearance_stream,
    class_scores,
    cross_modality_conv1,
    imagenet_cache_file,
    motion_stream,
    resnet50_state_dict,
    stages,
    stem,
    trunk,
    with_dropout,
)
from .subbatch_bn import SubBatchNorm2d, convert_sub_batch_norm
from .temporal import ChunkAware, TemporalConv, TemporalMaxPool, set_chunks, split_clips

__all__ = [
    "KINDS",
    "ChunkAware",
    "Checkpoint",
    "DropoutClassifier",
    "MotionResidual",
    "PreActivation",
    "STResNet",
    "SubBatchNorm2d",
    "TemporalConv",
    "TemporalMaxPool",
    "TwoStream",
    "appearance_stream",
    "build_model",
    "class_scores",
    "convert_sub_batch_norm",
    "cross_modality_conv1",
    "fold_batch_norm",
    "imagenet_cache_file",
    "load_checkpoint",
    "load_weights",
    "model_meta",
    "motion_stream",
    "resnet50_state_dict",
    "save_checkpoint",
    "set_chunks",
    "split_clips",
    "st_resnet",
    "st_resnet_star",
    "stages",
    "stem",
    "temporalize",
    "trunk",
    "two_stream",
    "with_dropout",
]
