# Optical flow: one job per frame shard, then the flow manifest of the dataset's flow shards.
# The method is part of the path and its parameters are rule params, so changing either reruns
# flow (and what reads it), never the frames. tvl1_torch's speed settings (batch, device,
# compile) are Untracked; on CUDA its job asks for gpu=1 and runs on a device of its own.


rule flow:
    input:
        frames=paths.frame_shard("{dataset}", "{shard}"),
    output:
        shard=paths.flow_shard("{dataset}", "{method}", "{shard}"),
    wildcard_constraints:
        method="tvl1|tvl1_torch|dis|farneback",
    params:
        method_params=lambda wc: flow_params(wc.dataset, wc.method),
        speed=lambda wc: flow_speed(wc.dataset, wc.method),
        bound=lambda wc: setting(wc.dataset, "flow")["bound"],
        quality=lambda wc: setting(wc.dataset, "flow")["jpeg_quality"],
        code=code_digest("flow"),
    threads: config["flow"]["threads"]
    resources:
        gpu=lambda wc: flow_gpus(wc.dataset, wc.method),
        mem_mb=lambda wc, attempt: 2000 * attempt,
    log:
        paths.log("{dataset}", "flow/{method}/{shard}"),
    benchmark:
        paths.benchmark("{dataset}", "flow/{method}/{shard}")
    conda:
        lambda wc: "../../envs/train.yaml" if wc.method == "tvl1_torch" else "../../envs/preprocess.yaml"  # torch
    shell:
        "python -m stresnet devices --gpus {resources.gpu} -- python -m stresnet flow --frames {input.frames}"
        " --out {output.shard} --method {wildcards.method} --params {params.method_params} --speed {params.speed}"
        " --bound {params.bound} --jpeg-quality {params.quality} --threads {threads} > {log} 2>&1"


rule flow_manifest:
    input:
        frames=paths.frames_manifest("{dataset}"),
        shards=flow_shards,
        stamp=lambda wc: stamp(paths.flow_manifest(wc.dataset, wc.method)),
    output:
        paths.flow_manifest("{dataset}", "{method}"),
    wildcard_constraints:
        method="tvl1|tvl1_torch|dis|farneback",
    params:
        code=code_digest("flow"),
    log:
        paths.log("{dataset}", "flow/{method}/manifest"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet flow manifest --shards {input.shards} --frames-manifest {input.frames}"
        " --out {output} > {log} 2>&1"


rule verify:
    # every stored image against its CRC-32, every listed file against its SHA-256; asked for
    # again with `snakemake --force results/<dataset>/verified.json`
    input:
        unpack(flow_input),
        listed=flow_listed,
    output:
        paths.verified("{dataset}"),
    params:
        code=code_digest("verify"),
    log:
        paths.log("{dataset}", "verify"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet verify --manifests {input.frames} {input.flow} --out {output} > {log} 2>&1"
