# Phase "data": per shard of clips, fetch each clip, then crop it to a stable 256x256 face box.


rule clips:
    output:
        record="data/clips/shards/{shard}.json",
    log:
        "logs/clips/{shard}.log",
    benchmark:
        "logs/benchmarks/clips/{shard}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards: 10 + 2 * len(SHARDS[wildcards.shard]),
    params:
        rows=shard_rows,
        manifest=config["manifest"],
        shards=settings("shards"),
        download=settings("download"),
        crop=settings("crop"),
        landmarker=settings("landmarker"),
        strict=STRICT,
    shell:
        "mssync clips --manifest {params.manifest} --shard {wildcards.shard} --record {output.record}"
        " --shards-settings {params.shards:q} --download-settings {params.download:q}"
        " --crop-settings {params.crop:q} --landmarker-settings {params.landmarker:q}"
        " {params.strict} > {log} 2>&1"


DATA_TARGETS = CLIPS_RECORDS


rule data_phase:
    input:
        DATA_TARGETS,
