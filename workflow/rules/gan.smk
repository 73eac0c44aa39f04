# Phase "gan": the MS-Sync generator, trained against the frozen 'loss' syncers, and its ablations.


rule gan:
    input:
        train=cache_of("train"),
        val=cache_of("val"),
        space=MOTION_SPACE,
        syncers=loss_syncers(config["gan"]["sync_levels"]),
    output:
        model="models/generator.pt",
        train_curve="results/gan/train.tsv",
        val_curve="results/gan/val.tsv",
    log:
        "logs/gan/train.log",
    benchmark:
        "logs/benchmarks/gan.tsv"
    threads: 1  # measured: the cpu-preset GAN is faster on one torch thread (71 s vs 77 s per 100 iterations)
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        train=MOTION_CACHE["train"],
        val=MOTION_CACHE["val"],
        settings=settings("gan"),
    shell:
        "mssync train-gan --train {params.train} --val {params.val} --space {input.space}"
        " --syncers {input.syncers} --gan-settings {params.settings:q} --threads {threads}"
        " --out {output.model} --train-curve {output.train_curve}"
        " --val-curve {output.val_curve} > {log} 2>&1"


rule gan_metrics:
    input:
        test=cache_of("test"),
        space=MOTION_SPACE,
        model="models/generator.pt",
        syncers=expand("models/syncers/eval/level{level}.pt", level=LEVELS),
    output:
        "results/gan/metrics.json",
    log:
        "logs/gan/metrics.log",
    benchmark:
        "logs/benchmarks/gan_metrics.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        test=MOTION_CACHE["test"],
    shell:
        "mssync eval-gan --test {params.test} --space {input.space} --model {input.model}"
        " --syncers {input.syncers} --threads {threads} --out {output} > {log} 2>&1"


GAN_TARGETS = [
    "models/generator.pt",
    "results/gan/train.tsv",
    "results/gan/val.tsv",
    "results/gan/metrics.json",
]


rule gan_phase:
    input:
        GAN_TARGETS,


# Ablations (evaluation.ablations): the same rule, with only gan.sync_levels replaced. Their
# settings never contain the main gan.sync_levels, so changing it (e.g. `dvc exp run -S
# 'gan.sync_levels=[0]'`) retrains the main generator and nothing here.
use rule gan as gan_ablation with:
    input:
        train=cache_of("train"),
        val=cache_of("val"),
        space=MOTION_SPACE,
        syncers=lambda wildcards: loss_syncers(ABLATIONS[wildcards.ablation]),
    output:
        model="models/ablations/{ablation}/generator.pt",
        train_curve="results/gan/ablations/{ablation}/train.tsv",
        val_curve="results/gan/ablations/{ablation}/val.tsv",
    log:
        "logs/gan/ablations/{ablation}.log",
    benchmark:
        "logs/benchmarks/gan_ablation_{ablation}.tsv"
    params:
        train=MOTION_CACHE["train"],
        val=MOTION_CACHE["val"],
        settings=lambda wildcards: settings("gan", sync_levels=ABLATIONS[wildcards.ablation]),


ABLATION_MODELS = expand("models/ablations/{ablation}/generator.pt", ablation=ABLATIONS)
ABLATION_CURVES = expand(
    "results/gan/ablations/{ablation}/{curve}.tsv", ablation=ABLATIONS, curve=["train", "val"]
)


ABLATION_TARGETS = ABLATION_MODELS + ABLATION_CURVES


rule ablations_phase:
    input:
        ABLATION_TARGETS,
