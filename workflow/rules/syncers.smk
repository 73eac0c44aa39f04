# Phase "syncers": motion space (fitted on train), then one syncer per (set, level) as its own job.


def active_preset():
    """The chosen syncer preset as JSON (only it, so editing another preset reruns nothing)."""
    return json.dumps(config["syncers"]["presets"][config["syncers"]["preset"]], sort_keys=True)


SYNCER_SETS = list(config["syncers"]["sets"])
LEVELS = config["pyramid"]["levels"]
SPLIT_FILES = {split: f"data/dataset/{split}.parquet" for split in SPLITS}


wildcard_constraints:
    set="|".join(SYNCER_SETS),
    level="|".join(str(level) for level in LEVELS),


rule motion_space:
    input:
        **SPLIT_FILES,
    output:
        space="models/motion_space.npz",
        metrics="results/motion_space.json",
    params:
        settings=settings("motion"),
    log:
        "logs/motion_space.log",
    benchmark:
        "logs/benchmarks/motion_space.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    shell:
        "mssync motion-space --train {input.train} --val {input.val} --test {input.test}"
        " --out {output.space} --metrics {output.metrics} --motion-settings {params.settings:q} > {log} 2>&1"


rule syncer:
    input:
        train=SPLIT_FILES["train"],
        val=SPLIT_FILES["val"],
        space="models/motion_space.npz",
    output:
        model="models/syncers/{set}/level{level}.pt",
        curve="results/syncers/curves/{set}_level{level}.tsv",
    params:
        preset=active_preset(),
        seed=lambda wildcards: config["syncers"]["sets"][wildcards.set]["seed"] * 100 + int(wildcards.level),
        kernel=config["pyramid"]["kernel"],
        device=config["syncers"]["device"],
    log:
        "logs/syncers/{set}_level{level}.log",
    benchmark:
        "logs/benchmarks/syncers/{set}_level{level}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    shell:
        "mssync train-syncer --train {input.train} --val {input.val} --space {input.space}"
        " --level {wildcards.level} --seed {params.seed} --preset {params.preset:q} --kernel {params.kernel}"
        " --device {params.device} --threads {threads} --out {output.model} --metrics {output.curve} > {log} 2>&1"


rule syncer_metrics:
    input:
        test=SPLIT_FILES["test"],
        space="models/motion_space.npz",
        models=expand("models/syncers/{{set}}/level{level}.pt", level=LEVELS),
    output:
        "results/syncers/{set}_metrics.json",
    params:
        preset=active_preset(),
        kernel=config["pyramid"]["kernel"],
    log:
        "logs/syncers/{set}_metrics.log",
    benchmark:
        "logs/benchmarks/syncers/{set}_metrics.tsv"
    resources:
        mem_mb=3000,
        runtime=20,
    shell:
        "mssync eval-syncers --test {input.test} --space {input.space} --models {input.models}"
        " --preset {params.preset:q} --kernel {params.kernel} --out {output} > {log} 2>&1"


SYNCER_TARGETS = ["results/motion_space.json"] + expand("results/syncers/{set}_metrics.json", set=SYNCER_SETS)


rule syncers_phase:
    input:
        SYNCER_TARGETS,
