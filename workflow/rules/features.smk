# Phase "features": per-frame landmarks + log-mel Parquet, consolidated splits, previews.
DATASET = [*SPLIT_FILES.values(), "data/dataset/splits.csv", "data/rejected.csv"]
PREVIEWS = [f"data/previews/{clip}.png" for clip in CLIPS]  # rejected clips too: they show why


rule features:
    input:
        record="data/clips/{clip}.json",
    output:
        "data/features/{clip}.parquet",
    log:
        "logs/features/{clip}.log",
    benchmark:
        "logs/benchmarks/features/{clip}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        features=settings("features"),
        landmarker=settings("landmarker"),
    shell:
        "mssync features --crop-record {input.record} --out {output}"
        " --features-settings {params.features:q} --landmarker-settings {params.landmarker:q} > {log} 2>&1"


rule dataset:
    input:
        CROP_RECORDS,
        feature_files,
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
    shell:
        "mssync dataset --manifest {params.manifest} --raw-dir data/raw --clips-dir data/clips"
        " --features-dir data/features --out-dir data/dataset --rejected {output.rejected}"
        " --dataset-settings {params.settings:q} {params.strict} > {log} 2>&1"


rule preview:
    input:
        raw="data/raw/{clip}.json",
        crop="data/clips/{clip}.json",
        features=preview_features,
    output:
        "data/previews/{clip}.png",
    log:
        "logs/preview/{clip}.log",
    benchmark:
        "logs/benchmarks/preview/{clip}.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        settings=settings("preview"),
        landmarker=settings("landmarker"),
    shell:
        "mssync preview --raw-record {input.raw} --crop-record {input.crop}"
        " --features data/features/{wildcards.clip}.parquet"
        " --out {output} --preview-settings {params.settings:q} --landmarker-settings {params.landmarker:q}"
        " > {log} 2>&1"


FEATURES_TARGETS = DATASET + PREVIEWS


rule features_phase:
    input:
        FEATURES_TARGETS,
        feature_files,
