# Frame extraction: one job per shard of videos.


rule frames:
    input:
        index="results/{dataset}/index.csv",
    output:
        shard="results/{dataset}/frames/{shard}.h5",
        report="results/{dataset}/frames/{shard}.csv",
    params:
        root=lambda wc: shlex.quote(dataset(wc.dataset)["root"]),
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        quality=lambda wc: setting(wc.dataset, "frames")["jpeg_quality"],
    threads: 1
    resources:
        mem_mb=2000,
    log:
        "results/{dataset}/logs/frames/{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/frames/{shard}.tsv"
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet frames --index {input.index} --shard {wildcards.shard} --root {params.root}"
        " --out {output.shard} --report {output.report} --short-side {params.short_side}"
        " --jpeg-quality {params.quality} --threads {threads} > {log} 2>&1"
