# Evaluation: fully convolutional testing of each model, Table 3's metrics, plots.


rule evaluate:
    input:
        unpack(train_data),
        models=evaluated_models,
    output:
        "results/{dataset}/split{split}/scores/{kind}.npz",
    wildcard_constraints:
        kind="two_stream|st_resnet|st_resnet_star",
    params:
        flow_method=lambda wc: setting(wc.dataset, "flow")["method"],
        chunks=lambda wc: setting(wc.dataset, "evaluate")["chunks"],
        workers=lambda wc: setting(wc.dataset, "evaluate")["workers"],
    threads: config["train"]["threads"]
    resources:
        gpu=lambda wc: min(1, train_setting(wc.dataset, "gpus")),
        mem_mb=16000,
    log:
        "results/{dataset}/logs/split{split}/evaluate_{kind}.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/evaluate_{kind}.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet evaluate --kind {wildcards.kind} --models {input.models}"
        " --videos {input.videos} --results results/{wildcards.dataset} --split {wildcards.split}"
        " --flow-method {params.flow_method} --chunks {params.chunks} --workers {params.workers}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule metrics:
    input:
        videos="results/{dataset}/videos.csv",
        scores=expand(
            "results/{{dataset}}/split{{split}}/scores/{kind}.npz",
            kind=["two_stream", "st_resnet", "st_resnet_star"],
        ),
    output:
        report(
            "results/{dataset}/split{split}/metrics.json",
            category="Metrics",
            subcategory="{dataset} split {split}",
        ),
    params:
        digest=lambda wc: config_digest(wc.dataset),
    log:
        "results/{dataset}/logs/split{split}/metrics.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet metrics split --scores $(dirname {input.scores[0]})"
        " --classes {input.videos} --config-digest {params.digest} --out {output} > {log} 2>&1"


rule plots:
    input:
        videos="results/{dataset}/videos.csv",
        curves=expand(
            "results/{{dataset}}/split{{split}}/{phase}/curves.csv",
            phase=["motion", "appearance", "st_resnet", "st_resnet_star"],
        ),
        scores="results/{dataset}/split{split}/scores/st_resnet_star.npz",
    output:
        curves=report(
            "results/{dataset}/split{split}/plots/training_curves.png",
            category="Plots",
            subcategory="{dataset} split {split}",
        ),
        confusion=report(
            "results/{dataset}/split{split}/plots/confusion_st_resnet_star.png",
            category="Plots",
            subcategory="{dataset} split {split}",
        ),
    log:
        "results/{dataset}/logs/split{split}/plots.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet report --curves {input.curves} --scores {input.scores}"
        " --classes {input.videos} --out-curves {output.curves}"
        " --out-confusion {output.confusion} > {log} 2>&1"


rule aggregate:
    input:
        metrics=lambda wc: expand(
            "results/{dataset}/split{split}/metrics.json",
            dataset=wc.dataset,
            split=run_splits(wc.dataset),
        ),
        plots=lambda wc: expand(
            "results/{dataset}/split{split}/plots/training_curves.png",
            dataset=wc.dataset,
            split=run_splits(wc.dataset),
        ),
    output:
        report("results/{dataset}/metrics.json", category="Metrics"),
    log:
        "results/{dataset}/logs/aggregate.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet metrics aggregate --inputs {input.metrics} --out {output} > {log} 2>&1"
