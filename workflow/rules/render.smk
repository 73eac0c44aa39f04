# Phase "render": every test clip rendered from its own first frame and audio by the trained
# generator (real | real mesh | generated mesh | portrait warp), a contact sheet per video, and
# the warp's own fidelity (frame 0 warped by real landmarks vs the real frames).


rule render:
    input:
        test=SPLIT_FILES["test"],
        crops=CLIPS_RECORDS,
        space=MOTION_SPACE,
        model="models/generator.pt",
    output:
        videos=directory("results/videos"),
        metrics="results/render/metrics.json",
    log:
        "logs/render.log",
    benchmark:
        "logs/benchmarks/render.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        settings=settings("render"),
    shell:
        "mssync render-clips --test {input.test} --clips-dir data/clips --model {input.model} --space {input.space}"
        " --out-dir {output.videos} --metrics {output.metrics} --render-settings {params.settings:q}"
        " --threads {threads} > {log} 2>&1"


RENDER_TARGETS = ["results/videos", "results/render/metrics.json"]


rule render_phase:
    input:
        RENDER_TARGETS,
