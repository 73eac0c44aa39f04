# Phase "features": per-frame landmarks + log-mel Parquet, consolidated splits, previews.


rule features:
    input:
        record="data/clips/{clip}.json",
    output:
        "data/features/{clip}.parquet",
    params:
        features=settings("features"),
        landmarker=settings("landmarker"),
    log:
        "logs/features/{clip}.log",
    benchmark:
        "logs/benchmarks/features/{clip}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "mssync features --crop-record {input.record} --out {output}"
        " --features-settings {params.features:q} --landmarker-settings {params.landmarker:q} > {log} 2>&1"


rule dataset:
    input:
        CROP_RECORDS,
        feature_files,
    output:
        splits=expand("data/dataset/{split}.parquet", split=SPLITS),
        table="data/dataset/splits.csv",
        rejected="data/rejected.csv",
    params:
        manifest=config["manifest"],
        settings=settings("dataset"),
        strict=STRICT,
    log:
        "logs/dataset.log",
    benchmark:
        "logs/benchmarks/dataset.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
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
    params:
        settings=settings("preview"),
        landmarker=settings("landmarker"),
    log:
        "logs/preview/{clip}.log",
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "mssync preview --raw-record {input.raw} --crop-record {input.crop}"
        " --features data/features/{wildcards.clip}.parquet"
        " --out {output} --preview-settings {params.settings:q} --landmarker-settings {params.landmarker:q}"
        " > {log} 2>&1"


rule features_phase:
    input:
        DATASET,
        PREVIEWS,
