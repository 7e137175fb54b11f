# Spatiotemporal Residual Networks (Feichtenhofer, Pinz, Wildes, NIPS 2016) as a workflow.
# `snakemake --cores N` builds the datasets named in config `targets` (the demo by default);
# `snakemake --cores N results/<dataset>/videos.csv` builds one dataset's stages.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/frames.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
