# Phase "syncers": motion space (fitted on train), each split encoded once into its motion cache,
# then one syncer per (set, level) as its own job.
# A syncer's checkpoint keeps its recipe (preset, seed, pyramid kernel): scoring reads it there.


rule motion_space:
    input:
        **SPLIT_FILES,
    output:
        space=MOTION_SPACE,
        metrics="results/motion_space.json",
    log:
        "logs/motion_space.log",
    benchmark:
        "logs/benchmarks/motion_space.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        motion=settings("motion"),
        crop=settings("crop"),
    shell:
        "mssync motion-space --train {input.train} --val {input.val} --test {input.test}"
        " --out {output.space} --metrics {output.metrics}"
        " --motion-settings {params.motion:q} --crop-settings {params.crop:q} > {log} 2>&1"


rule motion_cache:
    input:
        split="data/dataset/{split}.parquet",
        space=MOTION_SPACE,
    output:
        [f"data/motion/{{split}}{ext}" for ext in CACHE_EXTS],
    log:
        "logs/motion_cache/{split}.log",
    benchmark:
        "logs/benchmarks/motion_cache/{split}.tsv"
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        out=lambda wildcards: MOTION_CACHE[wildcards.split],
    shell:
        "mssync motion-cache --split {input.split} --space {input.space}"
        " --out {params.out} > {log} 2>&1"


rule syncer:
    input:
        train=cache_of("train"),
        val=cache_of("val"),
        space=MOTION_SPACE,
    output:
        model="models/syncers/{set}/level{level}.pt",
        curve="results/syncers/curves/{set}_level{level}.tsv",
    log:
        "logs/syncers/{set}_level{level}.log",
    benchmark:
        "logs/benchmarks/syncers/{set}_level{level}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        train=MOTION_CACHE["train"],
        val=MOTION_CACHE["val"],
        syncers=settings("syncers"),
        pyramid=settings("pyramid"),
    shell:
        "mssync train-syncer --train {params.train} --val {params.val} --space {input.space}"
        " --set {wildcards.set} --level {wildcards.level} --syncers-settings {params.syncers:q}"
        " --pyramid-settings {params.pyramid:q} --threads {threads} --out {output.model}"
        " --metrics {output.curve} > {log} 2>&1"


rule syncer_metrics:
    input:
        test=cache_of("test"),
        space=MOTION_SPACE,
        models=expand("models/syncers/{{set}}/level{level}.pt", level=LEVELS),
    output:
        "results/syncers/{set}_metrics.json",
    log:
        "logs/syncers/{set}_metrics.log",
    benchmark:
        "logs/benchmarks/syncers/{set}_metrics.tsv"
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        test=MOTION_CACHE["test"],
    shell:
        "mssync eval-syncers --test {params.test} --space {input.space} --models {input.models}"
        " --out {output} > {log} 2>&1"


SYNCER_TARGETS = (
    [MOTION_SPACE, "results/motion_space.json"]
    + [path for split in SPLITS for path in cache_of(split)]
    + expand("models/syncers/{set}/level{level}.pt", set=SYNCER_SETS, level=LEVELS)
    + expand("results/syncers/curves/{set}_level{level}.tsv", set=SYNCER_SETS, level=LEVELS)
    + expand("results/syncers/{set}_metrics.json", set=SYNCER_SETS)
)


rule syncers_phase:
    input:
        SYNCER_TARGETS,
