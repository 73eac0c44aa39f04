# Phase "gan": the MS-Sync generator, trained against the frozen 'loss' syncers.


rule gan:
    input:
        train=SPLIT_FILES["train"],
        val=SPLIT_FILES["val"],
        space="models/motion_space.npz",
        syncers=expand("models/syncers/loss/level{level}.pt", level=config["gan"]["sync_levels"]),
    output:
        model="models/generator.pt",
        train_curve="results/gan/train.tsv",
        val_curve="results/gan/val.tsv",
    params:
        settings=settings("gan"),
        kernel=config["pyramid"]["kernel"],
    log:
        "logs/gan/train.log",
    benchmark:
        "logs/benchmarks/gan.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "mssync train-gan --train {input.train} --val {input.val} --space {input.space}"
        " --syncers {input.syncers} --gan-settings {params.settings:q} --kernel {params.kernel}"
        " --threads {threads} --out {output.model} --train-curve {output.train_curve}"
        " --val-curve {output.val_curve} > {log} 2>&1"


rule gan_metrics:
    input:
        test=SPLIT_FILES["test"],
        space="models/motion_space.npz",
        model="models/generator.pt",
        syncers=expand("models/syncers/eval/level{level}.pt", level=LEVELS),
    output:
        "results/gan/metrics.json",
    params:
        kernel=config["pyramid"]["kernel"],
    log:
        "logs/gan/metrics.log",
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    shell:
        "mssync eval-gan --test {input.test} --space {input.space} --model {input.model}"
        " --syncers {input.syncers} --kernel {params.kernel} --threads {threads} --out {output} > {log} 2>&1"


GAN_TARGETS = ["results/gan/metrics.json"]


rule gan_phase:
    input:
        GAN_TARGETS,
