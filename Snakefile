# Spatiotemporal Residual Networks (Feichtenhofer, Pinz, Wildes, NIPS 2016) as a workflow.
# `snakemake --cores N` builds the datasets named in config `targets` (the demo by default);
# `snakemake --cores N results/<dataset>/split1/metrics.json` builds one dataset's split.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/flow.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


# trivial jobs run where Snakemake runs, never as cluster jobs
localrules:
    all,
    index_summary,
    imagenet_weights,
    videos,
    dataset_ready,
    flow_manifest,
    fuse,
    export_scores,
    metrics,
    plots,
    aggregate,


rule all:
    input:
        final_outputs(),
    default_target: True
