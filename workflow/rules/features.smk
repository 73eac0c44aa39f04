# Phase "features": per shard, per-frame landmarks + log-mel Parquet and a preview of every clip
# (rejected ones too: they show why); then the splits, consolidated by speaker.
DATASET = [*SPLIT_FILES.values(), "data/dataset/splits.csv", "data/rejected.csv"]


rule features:
    input:
        clips="data/clips/shards/{shard}.json",
    output:
        record="data/features/shards/{shard}.json",
    log:
        "logs/features/{shard}.log",
    benchmark:
        "logs/benchmarks/features/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards: 10 + 2 * len(SHARDS[wildcards.shard]),
    params:
        rows=shard_rows,
        manifest=config["manifest"],
        shards=settings("shards"),
        features=settings("features"),
        preview=settings("preview"),
        landmarker=settings("landmarker"),
        strict=STRICT,
    shell:
        "mssync features --manifest {params.manifest} --shard {wildcards.shard} --record {output.record}"
        " --shards-settings {params.shards:q} --features-settings {params.features:q}"
        " --preview-settings {params.preview:q} --landmarker-settings {params.landmarker:q}"
        " {params.strict} > {log} 2>&1"


rule dataset:
    input:
        CLIPS_RECORDS,
        FEATURES_RECORDS,
    output:
        splits=list(SPLIT_FILES.values()),
        table="data/dataset/splits.csv",
        rejected="data/rejected.csv",
    log:
        "logs/dataset.log",
    benchmark:
        "logs/benchmarks/dataset.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        manifest=config["manifest"],
        settings=settings("dataset"),
        strict=STRICT,
        out_dir="data/dataset",
        fold="",  # crossval_dataset (crossval.smk): --fold N and the crossval settings
    shell:
        "mssync dataset --manifest {params.manifest} --raw-dir data/raw --clips-dir data/clips"
        " --features-dir data/features --out-dir {params.out_dir} --rejected {output.rejected}"
        " --dataset-settings {params.settings:q} {params.fold} {params.strict} > {log} 2>&1"


FEATURES_TARGETS = FEATURES_RECORDS + DATASET


rule features_phase:
    input:
        FEATURES_TARGETS,
