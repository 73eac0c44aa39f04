# Phase "crossval" (target `crossval`; not part of `all`): K speaker-disjoint folds. Per fold, the
# main pipeline's rules again under folds/fold{fold}/: the fold's dataset (its speakers are the
# test split, a share of the others the inner validation split), the motion space fitted on the
# fold's train split, both syncer sets, and per seed MS-Sync, its ablations and the extra variants
# (crossval.variants), all scored on the fold's held-out speakers. Folds, seeds and variants are
# wildcards, so a cluster runs them side by side. `mssync crossval` then pools every fold: each
# usable speaker is tested exactly once, and every number gets a speaker-level bootstrap interval.
# (The folds live in folds/, not crossval/: Snakemake takes an existing path named like a target for
# that target, so after one run `snakemake crossval` would find "crossval" present and do nothing.)
import shlex

CROSSVAL = config["crossval"]
FOLDS = list(range(CROSSVAL["folds"]))
CV_SEEDS = CROSSVAL["seeds"]
CV_ROOT = "folds/fold{fold}"
# Generators other than MS-Sync: the ablations (sync levels replaced) and the extra variants
# (any gan overrides, e.g. sync_weighting: validated), each trained per fold and seed.
CV_VARIANTS = {
    **{name: {"sync_levels": levels} for name, levels in ABLATIONS.items()},
    **CROSSVAL["variants"],
}


wildcard_constraints:
    fold=r"\d+",
    seed=r"\d+",
    variant="|".join(re.escape(name) for name in CV_VARIANTS) or "(?!)",


def cv(path):
    """A path of the main layout, under the fold's folder (the {fold} wildcard stays)."""
    return f"{CV_ROOT}/{path}"


def cv_cache(split):
    return [cv(f"data/motion/{split}{ext}") for ext in CACHE_EXTS]


def cv_gan_settings(wildcards, variant=None):
    overrides = {"seed": int(wildcards.seed), **CV_VARIANTS.get(variant or "", {})}
    return settings("gan", **overrides)


def cv_sync_levels(variant):
    return CV_VARIANTS[variant].get("sync_levels", config["gan"]["sync_levels"])


def cv_evaluation_settings():
    """The evaluation section with every crossval generator named, so `evaluate` labels them."""
    ablations = {name: cv_sync_levels(name) for name in CV_VARIANTS}
    return settings("evaluation", ablations=ablations)


use rule dataset as crossval_dataset with:
    input:
        CLIPS_RECORDS,
        FEATURES_RECORDS,
    output:
        splits=[cv(f"data/dataset/{split}.parquet") for split in SPLITS],
        table=cv("data/dataset/splits.csv"),
        rejected=cv("data/rejected.csv"),
    log:
        "logs/folds/fold{fold}/dataset.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/dataset.tsv"
    params:
        manifest=config["manifest"],
        settings=settings("dataset"),
        strict=STRICT,
        out_dir=lambda wildcards: f"folds/fold{wildcards.fold}/data/dataset",
        fold=lambda wildcards: f"--fold {wildcards.fold} --crossval-settings "
        + shlex.quote(settings("crossval")),


use rule motion_space as crossval_motion_space with:
    input:
        **{split: cv(f"data/dataset/{split}.parquet") for split in SPLITS},
    output:
        space=cv(MOTION_SPACE),
        metrics=cv("results/motion_space.json"),
    log:
        "logs/folds/fold{fold}/motion_space.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/motion_space.tsv"


use rule motion_cache as crossval_motion_cache with:
    input:
        split=cv("data/dataset/{split}.parquet"),
        space=cv(MOTION_SPACE),
    output:
        [cv(f"data/motion/{{split}}{ext}") for ext in CACHE_EXTS],
    log:
        "logs/folds/fold{fold}/motion_cache/{split}.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/motion_cache/{split}.tsv"
    params:
        out=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/{wildcards.split}",


use rule syncer as crossval_syncer with:
    input:
        train=cv_cache("train"),
        val=cv_cache("val"),
        space=cv(MOTION_SPACE),
    output:
        model=cv("models/syncers/{set}/level{level}.pt"),
        curve=cv("results/syncers/curves/{set}_level{level}.tsv"),
    log:
        "logs/folds/fold{fold}/syncers/{set}_level{level}.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/syncers/{set}_level{level}.tsv"
    params:
        train=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/train",
        val=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/val",
        syncers=settings("syncers"),
        pyramid=settings("pyramid"),


use rule syncer_metrics as crossval_syncer_metrics with:
    input:
        test=cv_cache("test"),
        space=cv(MOTION_SPACE),
        models=[cv(f"models/syncers/{{set}}/level{level}.pt") for level in LEVELS],
    output:
        cv("results/syncers/{set}_metrics.json"),
    log:
        "logs/folds/fold{fold}/syncers/{set}_metrics.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/syncers/{set}_metrics.tsv"
    params:
        test=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/test",


use rule gan as crossval_gan with:
    input:
        train=cv_cache("train"),
        val=cv_cache("val"),
        space=cv(MOTION_SPACE),
        syncers=[
            cv(f"models/syncers/loss/level{level}.pt") for level in config["gan"]["sync_levels"]
        ],
    output:
        model=cv("models/seed{seed}/generator.pt"),
        train_curve=cv("results/gan/seed{seed}/train.tsv"),
        val_curve=cv("results/gan/seed{seed}/val.tsv"),
    log:
        "logs/folds/fold{fold}/gan/seed{seed}.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/gan/seed{seed}.tsv"
    params:
        train=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/train",
        val=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/val",
        settings=cv_gan_settings,


use rule gan as crossval_gan_variant with:
    input:
        train=cv_cache("train"),
        val=cv_cache("val"),
        space=cv(MOTION_SPACE),
        syncers=lambda wildcards: [
            f"folds/fold{wildcards.fold}/models/syncers/loss/level{level}.pt"
            for level in cv_sync_levels(wildcards.variant)
        ],
    output:
        model=cv("models/seed{seed}/ablations/{variant}/generator.pt"),
        train_curve=cv("results/gan/seed{seed}/ablations/{variant}/train.tsv"),
        val_curve=cv("results/gan/seed{seed}/ablations/{variant}/val.tsv"),
    log:
        "logs/folds/fold{fold}/gan/seed{seed}_{variant}.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/gan/seed{seed}_{variant}.tsv"
    params:
        train=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/train",
        val=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/val",
        settings=lambda wildcards: cv_gan_settings(wildcards, wildcards.variant),


use rule evaluate as crossval_evaluate with:
    input:
        test=cv_cache("test"),
        space=cv(MOTION_SPACE),
        model=cv("models/seed{seed}/generator.pt"),
        ablations=[cv(f"models/seed{{seed}}/ablations/{name}/generator.pt") for name in CV_VARIANTS],
        syncers=[cv(f"models/syncers/eval/level{level}.pt") for level in LEVELS],
    output:
        metrics=cv("results/seed{seed}/metrics.json"),
        details=cv("results/seed{seed}/evaluation/details.json"),
        tables=[
            cv(f"results/seed{{seed}}/evaluation/{name}.tsv")
            for name in ("sync", "dynamics", "lips")
        ],
        plots=[
            cv(f"results/seed{{seed}}/plots/{name}.png")
            for name in ("sync_levels", "pose_velocity", "mouth_audio_xcorr")
        ],
    log:
        "logs/folds/fold{fold}/evaluate/seed{seed}.log",
    benchmark:
        "logs/benchmarks/folds/fold{fold}/evaluate/seed{seed}.tsv"
    params:
        test=lambda wildcards: f"folds/fold{wildcards.fold}/data/motion/test",
        evaluation=cv_evaluation_settings(),
        crop=settings("crop"),
        tables_dir=lambda wildcards: f"folds/fold{wildcards.fold}/results/seed{wildcards.seed}/evaluation",
        plots_dir=lambda wildcards: f"folds/fold{wildcards.fold}/results/seed{wildcards.seed}/plots",


CROSSVAL_DETAILS = expand(
    "folds/fold{fold}/results/seed{seed}/evaluation/details.json", fold=FOLDS, seed=CV_SEEDS
)
CROSSVAL_OUTPUTS = [
    "results/crossval/summary.json",
    "results/crossval/report.html",
    "results/crossval/intervals.tsv",
    "results/crossval/differences.tsv",
    "results/crossval/viewer.tsv",
    "results/crossval/forest.png",
]


# Every file the folds make, not only what the pooling reads: Snakemake does not remake a lost
# intermediate file whose downstream outputs are present, so the target (`crossval`, a rule without
# outputs, like `all`) names them all and a deleted model or curve is rebuilt by `snakemake crossval`.
CROSSVAL_FILES = (
    expand(
        "folds/fold{fold}/models/syncers/{set}/level{level}.pt",
        fold=FOLDS,
        set=SYNCER_SETS,
        level=LEVELS,
    )
    + expand(
        "folds/fold{fold}/results/syncers/curves/{set}_level{level}.tsv",
        fold=FOLDS,
        set=SYNCER_SETS,
        level=LEVELS,
    )
    + expand("folds/fold{fold}/models/seed{seed}/generator.pt", fold=FOLDS, seed=CV_SEEDS)
    + expand(
        "folds/fold{fold}/models/seed{seed}/ablations/{variant}/generator.pt",
        fold=FOLDS,
        seed=CV_SEEDS,
        variant=CV_VARIANTS,
    )
)


rule crossval_pool:
    input:
        details=CROSSVAL_DETAILS,
        splits=expand("folds/fold{fold}/data/dataset/splits.csv", fold=FOLDS),
        syncers=expand("folds/fold{fold}/results/syncers/eval_metrics.json", fold=FOLDS),
    output:
        CROSSVAL_OUTPUTS,
    log:
        "logs/crossval/summary.log",
    benchmark:
        "logs/benchmarks/crossval/summary.tsv"
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        settings=settings("crossval"),
        out_dir="results/crossval",
    shell:
        "mssync crossval --details {input.details} --splits {input.splits} --syncer-metrics {input.syncers}"
        " --crossval-settings {params.settings:q}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule crossval:
    input:
        CROSSVAL_FILES + CROSSVAL_OUTPUTS,
