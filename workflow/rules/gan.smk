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


# Ablations (evaluation.ablations): the same `mssync train-gan`, with only gan.sync_levels
# replaced. Their settings never contain the main gan.sync_levels, so changing it (e.g.
# `dvc exp run -S 'gan.sync_levels=[0]'`) retrains the main generator and nothing here.
ABLATIONS = config["evaluation"]["ablations"]


wildcard_constraints:
    ablation="|".join(re.escape(name) for name in ABLATIONS) or "(?!)",


def ablation_settings(wildcards):
    """The gan section with the ablation's sync levels: the Snakemake param that reruns it."""
    return json.dumps({**config["gan"], "sync_levels": ABLATIONS[wildcards.ablation]}, sort_keys=True)


def ablation_syncers(wildcards):
    return expand("models/syncers/loss/level{level}.pt", level=ABLATIONS[wildcards.ablation])


rule gan_ablation:
    input:
        train=SPLIT_FILES["train"],
        val=SPLIT_FILES["val"],
        space="models/motion_space.npz",
        syncers=ablation_syncers,
    output:
        model="models/ablations/{ablation}/generator.pt",
        train_curve="results/gan/ablations/{ablation}/train.tsv",
        val_curve="results/gan/ablations/{ablation}/val.tsv",
    params:
        settings=ablation_settings,
        kernel=config["pyramid"]["kernel"],
    log:
        "logs/gan/ablations/{ablation}.log",
    benchmark:
        "logs/benchmarks/gan_ablation_{ablation}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    shell:
        "mssync train-gan --train {input.train} --val {input.val} --space {input.space}"
        " --syncers {input.syncers} --gan-settings {params.settings:q} --kernel {params.kernel}"
        " --threads {threads} --out {output.model} --train-curve {output.train_curve}"
        " --val-curve {output.val_curve} > {log} 2>&1"


ABLATION_MODELS = expand("models/ablations/{ablation}/generator.pt", ablation=ABLATIONS)
ABLATION_CURVES = expand("results/gan/ablations/{ablation}/{curve}.tsv", ablation=ABLATIONS, curve=["train", "val"])


rule ablations_phase:
    input:
        ABLATION_MODELS + ABLATION_CURVES,
