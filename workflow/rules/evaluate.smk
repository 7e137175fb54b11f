# Evaluation: fully convolutional testing of each model, late fusion with external scores
# (Table 4, right; only where a dataset names some), Table 3's metrics, plots.


rule evaluate:
    input:
        unpack(flow_input),
        listed=flow_listed,
        models=evaluated_models,
    output:
        paths.scores("{dataset}", "{split}", "{kind}"),
    wildcard_constraints:
        kind="two_stream|st_resnet|st_resnet_star",
    params:
        chunks=lambda wc: setting(wc.dataset, "evaluate")["chunks"],
        padding=lambda wc: setting(wc.dataset, "evaluate")["padding"],
        workers=lambda wc: Untracked(str(setting(wc.dataset, "evaluate")["workers"])),
        precision=lambda wc: train_setting(wc.dataset, "precision"),
        launcher=lambda wc: evaluation_launcher(wc.dataset),
        code=code_digest("evaluate"),
    threads: config["train"]["threads"]
    resources:
        gpu=evaluate_resources("gpu"),
        cpus_per_gpu=evaluate_resources("cpus_per_gpu"),
        cpus_per_task=evaluate_resources("cpus_per_task"),
        nodes=1,
        mem_mb=lambda wc, attempt: 16000 * attempt,
    log:
        paths.log("{dataset}", "split{split}/evaluate_{kind}"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/evaluate_{kind}")
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launcher} -m stresnet evaluate --kind {wildcards.kind} --models {input.models}"
        " --frames-manifest {input.frames} --flow-manifest {input.flow} --split {wildcards.split}"
        " --chunks {params.chunks} --padding {params.padding} --precision {params.precision}"
        " --workers {params.workers} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule fuse:
    input:
        videos=paths.videos_csv("{dataset}"),
        classes=paths.classes_csv("{dataset}"),
        scores=paths.scores("{dataset}", "{split}", "st_resnet_star"),
        external=external_files,
    output:
        paths.fused_scores("{dataset}", "{split}"),
    params:
        sources=source_flags,
        code=code_digest("fuse"),
    log:
        paths.log("{dataset}", "split{split}/fuse"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/fuse")
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet fuse split --scores {input.scores} --videos {input.videos} --classes {input.classes}"
        " --split {wildcards.split}"
        " {params.sources} --out {output} > {log} 2>&1"


rule export_scores:
    input:
        classes=paths.classes_csv("{dataset}"),
        scores=paths.scores("{dataset}", "{split}", "{kind}"),
    output:
        paths.exported_scores("{dataset}", "{split}", "{kind}", "{part}"),
    wildcard_constraints:
        kind="two_stream|st_resnet|st_resnet_star",
        part="appearance|motion|fused",
    params:
        code=code_digest("fuse"),
    log:
        paths.log("{dataset}", "split{split}/export_{kind}_{part}"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet fuse export --scores {input.scores} --part {wildcards.part}"
        " --classes {input.classes} --out {output} > {log} 2>&1"


rule metrics:
    input:
        classes=paths.classes_csv("{dataset}"),
        scores=metrics_scores,
    output:
        report(
            paths.split_metrics("{dataset}", "{split}"),
            category="Metrics",
            subcategory="{dataset} split {split}",
            labels=report_labels("Table 3's figures of the split (JSON)", lambda output: output[0]),
        ),
    params:
        digest=lambda wc: config_digest(wc.dataset),
        smoke=SMOKE,
        board=test_board,
        code=code_digest("metrics"),
    log:
        paths.log("{dataset}", "split{split}/metrics"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet metrics split --scores {input.scores}"
        " --classes {input.classes} --config-digest {params.digest} --smoke {params.smoke}"
        " --tensorboard {params.board} --out {output} > {log} 2>&1"


rule plots:
    input:
        classes=paths.classes_csv("{dataset}"),
        curves=[paths.curves("{dataset}", "{split}", phase) for phase in paths.PHASES],
        scores=paths.scores("{dataset}", "{split}", "st_resnet_star"),
    output:
        curves=[
            report(
                paths.plot("{dataset}", "{split}", f"curves_{phase}"),
                caption="../report/curves.rst",
                category="Training curves",
                subcategory="{dataset} split {split}",
                labels={"phase": phase},
            )
            for phase in paths.PHASES
        ],
        confusion=report(
            paths.plot("{dataset}", "{split}", "confusion_st_resnet_star"),
            caption="../report/confusion.rst",
            category="Per class",
            subcategory="{dataset} split {split}",
        ),
        classes=report(
            paths.per_class("{dataset}", "{split}"),
            caption="../report/per_class.rst",
            category="Per class",
            subcategory="{dataset} split {split}",
        ),
    params:
        split_dir=lambda wc: paths.split_dir(wc.dataset, wc.split),  # the report's caption names it
        code=code_digest("report"),
    log:
        paths.log("{dataset}", "split{split}/plots"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet report split --curves {input.curves} --scores {input.scores}"
        " --classes {input.classes} --out-curves {output.curves}"
        " --out-confusion {output.confusion} --out-classes {output.classes} > {log} 2>&1"


rule aggregate:
    input:
        metrics=lambda wc: [paths.split_metrics(wc.dataset, k) for k in run_splits(wc.dataset)],
        plots=lambda wc: [paths.per_class(wc.dataset, k) for k in run_splits(wc.dataset)],
    output:
        metrics=report(
            paths.metrics("{dataset}"),
            caption="../report/metrics.rst",
            category="Table 3",
            subcategory="{dataset}",
            labels=report_labels("mean over the splits (JSON)", lambda output: output.metrics),
        ),
        table=report(
            paths.table3("{dataset}"),
            caption="../report/table3.rst",
            category="Table 3",
            subcategory="{dataset}",
            labels=report_labels("Table 3", lambda output: output.metrics),
        ),
    params:
        splits=lambda wc: " ".join(map(str, run_splits(wc.dataset))),
        chunks=lambda wc: setting(wc.dataset, "evaluate")["chunks"],  # the report's caption names them
        format=lambda wc: DATASETS[wc.dataset]["format"],
        code=code_digest("report") + code_digest("metrics"),
    log:
        paths.log("{dataset}", "aggregate"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet metrics aggregate --inputs {input.metrics} --out {output.metrics} > {log} 2>&1;"
        " python -m stresnet report table3 --metrics {input.metrics} --splits {params.splits}"
        " --dataset {wildcards.dataset} --format {params.format} --out {output.table} >> {log} 2>&1"
