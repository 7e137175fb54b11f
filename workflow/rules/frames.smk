# Frame extraction: one job per shard of videos. A job's identity is its own videos (files and
# list), not the whole index: a changed, added or removed video reruns its shard only.


rule frames:
    input:
        index=ancient(paths.index_csv("{dataset}")),
        videos=shard_videos,
    output:
        shard=paths.frame_shard("{dataset}", "{shard}"),
        report=paths.frame_report("{dataset}", "{shard}"),
    params:
        members=shard_members,
        root=shard_root,
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        quality=lambda wc: setting(wc.dataset, "frames")["jpeg_quality"],
        tolerance=lambda wc: setting(wc.dataset, "frames")["partial_tolerance"],
        accept_partial=lambda wc: "--accept-partial" if DATASETS[wc.dataset].get("accept_partial_videos") else "",
        code=code_digest("frames"),
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
    log:
        paths.log("{dataset}", "frames/{shard}"),
    benchmark:
        paths.benchmark("{dataset}", "frames/{shard}")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "python -m stresnet frames --index {input.index} --shard {wildcards.shard} --root {params.root}"
        " --out {output.shard} --report {output.report} --short-side {params.short_side}"
        " --jpeg-quality {params.quality} --partial-tolerance {params.tolerance} {params.accept_partial}"
        " --threads {threads} > {log} 2>&1"
