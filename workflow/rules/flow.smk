# Optical flow: one job per frame shard, then a summary of the dataset's flow shards.
# The method is part of the path and its parameters are rule params, so changing either reruns
# flow (and what reads it), never the frames.


rule flow:
    input:
        frames="results/{dataset}/frames/{shard}.h5",
    output:
        shard="results/{dataset}/flow/{method}/{shard}.h5",
    wildcard_constraints:
        method="tvl1|dis|farneback",
    params:
        method_params=lambda wc: shlex.quote(json.dumps(setting(wc.dataset, "flow")[wc.method], sort_keys=True)),
        bound=lambda wc: setting(wc.dataset, "flow")["bound"],
        quality=lambda wc: setting(wc.dataset, "flow")["jpeg_quality"],
    threads: config["flow"]["threads"]
    resources:
        mem_mb=2000,
    log:
        "results/{dataset}/logs/flow/{method}/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/flow/{method}/{shard}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet flow --frames {input.frames} --out {output.shard}"
        " --method {wildcards.method} --params {params.method_params} --bound {params.bound}"
        " --jpeg-quality {params.quality} --threads {threads} > {log} 2>&1"


rule flow_done:
    input:
        flow_shards,
    output:
        "results/{dataset}/flow/{method}/done.json",
    wildcard_constraints:
        method="tvl1|dis|farneback",
    log:
        "results/{dataset}/logs/flow/{method}/done.log",
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet flow summary --shards {input} --out {output} > {log} 2>&1"
