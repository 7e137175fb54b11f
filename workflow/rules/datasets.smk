# Getting the videos (demo generation, official archives) and indexing them.


rule demo_videos:
    output:
        directory("results/{dataset}/raw"),
    params:
        demo=lambda wc: DATASETS[wc.dataset].get("demo", {}),
    log:
        "results/{dataset}/logs/demo_videos.log",
    benchmark:
        "results/{dataset}/benchmarks/demo_videos.tsv"
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet demo --out {output} --seed {params.demo[seed]} --groups {params.demo[groups]}"
        " --clips-per-group {params.demo[clips_per_group]} --frames {params.demo[frames]}"
        " --width {params.demo[width]} --height {params.demo[height]} > {log} 2>&1"


rule fetch:
    output:
        directory("results/{dataset}/download"),
    params:
        urls=lambda wc: " ".join(f"--url {shlex.quote(u)}" for u in dataset(wc.dataset)["url"]),
        checksums=lambda wc: " ".join(
            f"--sha256 {s}" for s in dataset(wc.dataset).get("sha256", [])
        ),
    log:
        "results/{dataset}/logs/fetch.log",
    benchmark:
        "results/{dataset}/benchmarks/fetch.tsv"
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet fetch {params.urls} {params.checksums} --out {output} > {log} 2>&1"


checkpoint index:
    input:
        unpack(dataset_source),
    output:
        index="results/{dataset}/index.csv",
    params:
        format=lambda wc: dataset(wc.dataset)["format"],
        root=lambda wc: shlex.quote(dataset(wc.dataset)["root"]),
        splits=lambda wc: (
            f"--splits {shlex.quote(dataset(wc.dataset)['splits'])}"
            if dataset(wc.dataset).get("splits")
            else ""
        ),
        shard_size=lambda wc: setting(wc.dataset, "index")["shard_size"],
        seed=lambda wc: setting(wc.dataset, "index")["seed"],
        test_fraction=lambda wc: setting(wc.dataset, "index")["test_fraction"],
    log:
        "results/{dataset}/logs/index.log",
    benchmark:
        "results/{dataset}/benchmarks/index.tsv"
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index build --format {params.format} --root {params.root} {params.splits}"
        " --shard-size {params.shard_size} --seed {params.seed}"
        " --test-fraction {params.test_fraction} --out {output.index} > {log} 2>&1"


rule videos:
    input:
        index="results/{dataset}/index.csv",
        reports=frame_reports,
    output:
        videos="results/{dataset}/videos.csv",
        bad="results/{dataset}/bad_videos.csv",
    log:
        "results/{dataset}/logs/videos.log",
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index merge --index {input.index} --reports {input.reports}"
        " --out {output.videos} --bad {output.bad} > {log} 2>&1"


rule dataset_ready:
    input:
        videos="results/{dataset}/videos.csv",
    output:
        "results/{dataset}/dataset_ready.json",
    params:
        skip_bad=lambda wc: "--skip-bad" if DATASETS[wc.dataset].get("skip_bad_videos") else "",
    log:
        "results/{dataset}/logs/dataset_ready.log",
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index check --videos {input.videos} {params.skip_bad} --out {output}"
        " > {log} 2>&1"
