# Training: the four phases of Table 2, each starting from the previous phases' models.
# A killed job leaves checkpoint.pt beside its outputs; the rerun resumes from it.


rule train_motion:
    input:
        unpack(train_data),
        unpack(stream_init("motion")),
    output:
        model="results/{dataset}/split{split}/motion/model.pt",
        curves="results/{dataset}/split{split}/motion/curves.csv",
    params:
        phase="motion",
        settings=lambda wc: shlex.quote(json.dumps(phase_settings(wc.dataset, "motion"))),
        launcher=lambda wc: launcher(wc.dataset),
        pretrained=lambda wc: shlex.quote(train_setting(wc.dataset, "pretrained")),
        flow_method=lambda wc: setting(wc.dataset, "flow")["method"],
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        init=init_flag,
    threads: config["train"]["threads"]
    resources:
        gpu=lambda wc: train_setting(wc.dataset, "gpus"),
        mem_mb=16000,
    log:
        "results/{dataset}/logs/split{split}/train_motion.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/train_motion.tsv"
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launcher} -m stresnet train --phase {params.phase} --videos {input.videos}"
        " --results results/{wildcards.dataset} --split {wildcards.split}"
        " --flow-method {params.flow_method} --short-side {params.short_side}"
        " --config {params.settings} --pretrained {params.pretrained} {params.init}"
        " --threads {threads} --out-dir $(dirname {output.model}) > {log} 2>&1"


use rule train_motion as train_appearance with:
    input:
        unpack(train_data),
        unpack(stream_init("appearance")),
    output:
        model="results/{dataset}/split{split}/appearance/model.pt",
        curves="results/{dataset}/split{split}/appearance/curves.csv",
    params:
        phase="appearance",
        settings=lambda wc: shlex.quote(json.dumps(phase_settings(wc.dataset, "appearance"))),
        launcher=lambda wc: launcher(wc.dataset),
        pretrained=lambda wc: shlex.quote(train_setting(wc.dataset, "pretrained")),
        flow_method=lambda wc: setting(wc.dataset, "flow")["method"],
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        init=init_flag,
    log:
        "results/{dataset}/logs/split{split}/train_appearance.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/train_appearance.tsv"


use rule train_motion as train_st_resnet with:
    input:
        unpack(train_data),
        appearance="results/{dataset}/split{split}/appearance/model.pt",
        motion="results/{dataset}/split{split}/motion/model.pt",
    output:
        model="results/{dataset}/split{split}/st_resnet/model.pt",
        curves="results/{dataset}/split{split}/st_resnet/curves.csv",
    params:
        phase="st_resnet",
        settings=lambda wc: shlex.quote(json.dumps(phase_settings(wc.dataset, "st_resnet"))),
        launcher=lambda wc: launcher(wc.dataset),
        pretrained="none",
        flow_method=lambda wc: setting(wc.dataset, "flow")["method"],
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        init=init_flag,
    log:
        "results/{dataset}/logs/split{split}/train_st_resnet.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/train_st_resnet.tsv"


use rule train_motion as train_st_resnet_star with:
    input:
        unpack(train_data),
        st_resnet="results/{dataset}/split{split}/st_resnet/model.pt",
    output:
        model="results/{dataset}/split{split}/st_resnet_star/model.pt",
        curves="results/{dataset}/split{split}/st_resnet_star/curves.csv",
    params:
        phase="st_resnet_star",
        settings=lambda wc: shlex.quote(json.dumps(phase_settings(wc.dataset, "st_resnet_star"))),
        launcher=lambda wc: launcher(wc.dataset),
        pretrained="none",
        flow_method=lambda wc: setting(wc.dataset, "flow")["method"],
        short_side=lambda wc: setting(wc.dataset, "frames")["short_side"],
        init=init_flag,
    log:
        "results/{dataset}/logs/split{split}/train_st_resnet_star.log",
    benchmark:
        "results/{dataset}/benchmarks/split{split}/train_st_resnet_star.tsv"
