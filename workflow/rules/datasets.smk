# Getting the videos (demo generation, official archives), indexing them, and the gate whose
# output is the frames manifest that every later stage takes.


# one rule per demo dataset, whose files are known from its settings: each frame job can then
# take its own videos as inputs (and copy in only those from a storage provider)
for _demo in [name for name, entry in DATASETS.items() if entry["format"] == "demo"]:

    rule:
        name:
            f"demo_videos_{_demo}"
        output:
            files=demo_files(_demo),  # split files first: the folder is two above the first
        params:
            demo=DATASETS[_demo]["demo"],
            code=code_digest("demo"),
        log:
            paths.log(_demo, "demo_videos"),
        benchmark:
            paths.benchmark(_demo, "demo_videos")
        conda:
            "../../envs/preprocess.yaml"
        shell:
            "python -m stresnet demo --out \"$(dirname \"$(dirname {output.files[0]:q})\")\" --seed {params.demo[seed]}"
            " --groups {params.demo[groups]} --clips-per-group {params.demo[clips_per_group]}"
            " --frames {params.demo[frames]} --width {params.demo[width]} --height {params.demo[height]} > {log} 2>&1"


rule fetch:
    output:
        directory(paths.download_dir("{dataset}")),
    params:
        urls=lambda wc: " ".join(f"--url {shlex.quote(u)}" for u in dataset(wc.dataset)["url"]),
        checksums=lambda wc: " ".join(
            f"--sha256 {s}" for s in dataset(wc.dataset).get("sha256", [])
        ),
        partial=lambda wc: shlex.quote(paths.download_partial_dir(wc.dataset)),
        # raising a limit after a refusal reruns the failed job anyway; after a success it reruns nothing
        limits=lambda wc: Untracked(
            f"--max-unpacked-gb {setting(wc.dataset, 'fetch')['max_unpacked_gb']}"
            f" --max-members {setting(wc.dataset, 'fetch')['max_members']}"
        ),
        code=code_digest("fetch"),
    log:
        paths.log("{dataset}", "fetch"),
    benchmark:
        paths.benchmark("{dataset}", "fetch")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet fetch {params.urls} {params.checksums} --partial-dir {params.partial}"
        " {params.limits} --out {output} > {log} 2>&1"


checkpoint index:
    input:
        unpack(dataset_source),
    output:
        index=paths.index_csv("{dataset}"),
        classes=paths.classes_csv("{dataset}"),
    params:
        format=lambda wc: dataset(wc.dataset)["format"],
        root=dataset_root,
        splits=dataset_splits,
        shard_size=lambda wc: setting(wc.dataset, "index")["shard_size"],
        seed=lambda wc: setting(wc.dataset, "index")["seed"],
        test_fraction=lambda wc: setting(wc.dataset, "index")["test_fraction"],
        # folder datasets listed by annotation files (Kinetics) may lack videos: left out when skipped
        missing=lambda wc: (
            "--allow-missing"
            if dataset(wc.dataset)["format"] == "folder" and dataset(wc.dataset).get("skip_bad_videos")
            else ""
        ),
        smoke=f"--smoke-videos {stresnet.config.SMOKE_VIDEOS}" if SMOKE else "",
        videos=videos_fingerprint,
        code=code_digest("index"),
    log:
        paths.log("{dataset}", "index"),
    benchmark:
        paths.benchmark("{dataset}", "index")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index build --format {params.format} --root {params.root} {params.splits}"
        " --shard-size {params.shard_size} --seed {params.seed}"
        " --test-fraction {params.test_fraction} {params.missing} {params.smoke} --out {output.index}"
        " --classes-out {output.classes} > {log} 2>&1"


rule index_summary:
    # the summary line of what the index will make; also what rebuilds a deleted index.csv: its
    # param turns "missing", so it runs and so does the index before it, while the rebuilt index,
    # when identical, reruns nothing after it (its consumers take it as ancient, by content)
    input:
        index=ancient(paths.index_csv("{dataset}")),
        classes=ancient(paths.classes_csv("{dataset}")),
    output:
        paths.index_summary("{dataset}"),
    params:
        index=lambda wc: result_state(paths.index_csv(wc.dataset)),
        root=lambda wc: shlex.quote(dataset(wc.dataset)["root"]),  # for the size of the videos, where on this disk
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        flow=lambda wc: flow_method(wc.dataset),
        splits=lambda wc: len(run_splits(wc.dataset)),
        code=code_digest("summary"),
    log:
        paths.log("{dataset}", "index_summary"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet summary --dataset {wildcards.dataset} --index {input.index} --classes {input.classes}"
        " --root {params.root} --short-side {params.short_side} --flow-method {params.flow} --splits {params.splits}"
        " --out {output} 2>&1 | tee {log}"


rule videos:
    input:
        index=ancient(paths.index_csv("{dataset}")),
        reports=frame_reports,
    output:
        videos=paths.videos_csv("{dataset}"),
        bad=paths.bad_videos_csv("{dataset}"),
    params:
        index=lambda wc: result_state(paths.index_csv(wc.dataset)),
        code=code_digest("index"),
    log:
        paths.log("{dataset}", "videos"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index merge --index {input.index} --reports {input.reports}"
        " --out {output.videos} --bad {output.bad} > {log} 2>&1"


rule dataset_ready:
    input:
        summary=ancient(paths.index_summary("{dataset}")),
        videos=paths.videos_csv("{dataset}"),
        classes=paths.classes_csv("{dataset}"),
        shards=frame_shards,
        stamp=lambda wc: stamp(paths.frames_manifest(wc.dataset)),
    output:
        paths.frames_manifest("{dataset}"),
    params:
        skip_bad=lambda wc: "--skip-bad" if DATASETS[wc.dataset].get("skip_bad_videos") else "",
        code=code_digest("index"),
    log:
        paths.log("{dataset}", "dataset_ready"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet index check --videos {input.videos} --classes {input.classes} --shards {input.shards}"
        " {params.skip_bad}"
        " --out {output} > {log} 2>&1"
