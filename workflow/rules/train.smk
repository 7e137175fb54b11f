# Training: the four phases of Table 2, each starting from the previous phases' models.
# A killed job leaves checkpoint.pt beside its outputs; the rerun resumes from it when nothing
# that shapes the result changed. Params hold only result-shaping settings; speed settings
# (workers, micro-batch, checkpoint interval, GPUs) are Untracked. The log is appended to, never
# truncated: a second job refused by the output lock must not wipe the running job's log.


rule train_motion:
    input:
        unpack(flow_input),
        unpack(stream_init("motion")),
        listed=flow_listed,
    output:
        model=paths.model("{dataset}", "{split}", "motion"),
        curves=paths.curves("{dataset}", "{split}", "motion"),
    params:
        phase="motion",
        settings=lambda wc: shaping(wc.dataset, "motion"),
        speed=lambda wc: speed(wc.dataset, "motion"),
        launcher=lambda wc: launcher(wc.dataset, "motion"),
        state=lambda wc: state_flag(wc, "motion"),
        pretrained=pretrained_flag,
        init=init_flag,
        flow=flow_flag,
        code=code_digest("train"),
    threads: config["train"]["threads"]
    resources:
        **train_job_resources("motion"),
    log:
        paths.log("{dataset}", "split{split}/train_motion"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/train_motion")
    conda:
        "../../envs/train.yaml"
    shell:
        "{params.launcher} -m stresnet train --phase {params.phase} --split {wildcards.split}"
        " --frames-manifest {input.frames} {params.flow} --config {params.settings} --speed {params.speed}"
        " --pretrained {params.pretrained} {params.init} --threads {threads}"
        " --out-dir $(dirname {output.model}) {params.state} --log-file {log} >> {log} 2>&1"


use rule train_motion as train_appearance with:
    input:
        unpack(frames_input),
        unpack(stream_init("appearance")),
        listed=frames_listed,
    output:
        model=paths.model("{dataset}", "{split}", "appearance"),
        curves=paths.curves("{dataset}", "{split}", "appearance"),
    params:
        phase="appearance",
        settings=lambda wc: shaping(wc.dataset, "appearance"),
        speed=lambda wc: speed(wc.dataset, "appearance"),
        launcher=lambda wc: launcher(wc.dataset, "appearance"),
        state=lambda wc: state_flag(wc, "appearance"),
        pretrained=pretrained_flag,
        init=init_flag,
        flow=flow_flag,
        code=code_digest("train"),
    resources:
        **train_job_resources("appearance"),
    log:
        paths.log("{dataset}", "split{split}/train_appearance"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/train_appearance")


use rule train_motion as train_st_resnet with:
    input:
        unpack(flow_input),
        listed=flow_listed,
        appearance=paths.model("{dataset}", "{split}", "appearance"),
        motion=paths.model("{dataset}", "{split}", "motion"),
    output:
        model=paths.model("{dataset}", "{split}", "st_resnet"),
        curves=paths.curves("{dataset}", "{split}", "st_resnet"),
    params:
        phase="st_resnet",
        settings=lambda wc: shaping(wc.dataset, "st_resnet"),
        speed=lambda wc: speed(wc.dataset, "st_resnet"),
        launcher=lambda wc: launcher(wc.dataset, "st_resnet"),
        state=lambda wc: state_flag(wc, "st_resnet"),
        pretrained="none",
        init=init_flag,
        flow=flow_flag,
        code=code_digest("train"),
    resources:
        **train_job_resources("st_resnet"),
    log:
        paths.log("{dataset}", "split{split}/train_st_resnet"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/train_st_resnet")


use rule train_motion as train_st_resnet_star with:
    input:
        unpack(flow_input),
        listed=flow_listed,
        st_resnet=paths.model("{dataset}", "{split}", "st_resnet"),
    output:
        model=paths.model("{dataset}", "{split}", "st_resnet_star"),
        curves=paths.curves("{dataset}", "{split}", "st_resnet_star"),
    params:
        phase="st_resnet_star",
        settings=lambda wc: shaping(wc.dataset, "st_resnet_star"),
        speed=lambda wc: speed(wc.dataset, "st_resnet_star"),
        launcher=lambda wc: launcher(wc.dataset, "st_resnet_star"),
        state=lambda wc: state_flag(wc, "st_resnet_star"),
        pretrained="none",
        init=init_flag,
        flow=flow_flag,
        code=code_digest("train"),
    resources:
        **train_job_resources("st_resnet_star"),
    log:
        paths.log("{dataset}", "split{split}/train_st_resnet_star"),
    benchmark:
        paths.benchmark("{dataset}", "split{split}/train_st_resnet_star")


rule imagenet_weights:
    # a local rule: it runs where Snakemake runs, so that compute nodes without internet only read
    # the file (or `snakemake --cores 1 results/pretrained/<file>` on a login node, once)
    output:
        paths.imagenet_weights(),
    params:
        code=code_digest("weights"),
    log:
        f"{paths.BASE_RESULTS}/pretrained/imagenet_weights.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m stresnet weights --out {output} > {log} 2>&1"
