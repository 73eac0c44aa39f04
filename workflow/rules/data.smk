# Phase "data": fetch each manifest clip, then crop it to a stable 256x256 face box.


rule download:
    output:
        record="data/raw/{clip}.json",
    log:
        "logs/download/{clip}.log",
    benchmark:
        "logs/benchmarks/download/{clip}.tsv"
    resources:
        mem_mb=500,
        runtime=30,
    params:
        row=manifest_row,
        manifest=config["manifest"],
        settings=settings("download"),
        strict=STRICT,
    shell:
        "mssync download --manifest {params.manifest} --clip {wildcards.clip}"
        " --out data/raw/{wildcards.clip}.mp4 --record {output.record}"
        " --download-settings {params.settings:q} {params.strict} > {log} 2>&1"


checkpoint crop:
    input:
        record="data/raw/{clip}.json",
    output:
        record="data/clips/{clip}.json",
    log:
        "logs/crop/{clip}.log",
    benchmark:
        "logs/benchmarks/crop/{clip}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        crop=settings("crop"),
        landmarker=settings("landmarker"),
        strict=STRICT,
    shell:
        "mssync crop --raw-record {input.record} --out-dir data/clips"
        " --crop-settings {params.crop:q} --landmarker-settings {params.landmarker:q}"
        " {params.strict} > {log} 2>&1"


DATA_TARGETS = RAW_RECORDS + CROP_RECORDS


rule data_phase:
    input:
        DATA_TARGETS,
