# Phase "evaluate": test-split metrics of MS-Sync, its ablations and the baselines; then the report.
# RENDER_TARGETS comes from render.smk (included before this file): the report links the videos and
# embeds their contact sheets. Without it the report still builds and says the videos are missing.
REPORT_RENDER = globals().get("RENDER_TARGETS", [])
EVALUATION_PLOTS = [
    f"results/plots/{name}.png" for name in ("sync_levels", "pose_velocity", "mouth_audio_xcorr")
]
EVALUATION_TABLES = [
    f"results/evaluation/{name}.tsv" for name in ("sync", "dynamics", "lips", "viewer")
]


rule evaluate:
    input:
        test=cache_of("test"),
        space=MOTION_SPACE,
        model="models/generator.pt",
        ablations=ABLATION_MODELS,
        syncers=expand("models/syncers/eval/level{level}.pt", level=LEVELS),
    output:
        metrics="results/metrics.json",
        details="results/evaluation/details.json",
        tables=EVALUATION_TABLES,
        plots=EVALUATION_PLOTS,
    log:
        "logs/evaluate/metrics.log",
    benchmark:
        "logs/benchmarks/evaluate.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        test=MOTION_CACHE["test"],
        evaluation=settings("evaluation"),
        crop=settings("crop"),
        tables_dir="results/evaluation",
        plots_dir="results/plots",
    shell:
        "mssync evaluate --test {params.test} --space {input.space} --model {input.model}"
        " --ablations {input.ablations} --syncers {input.syncers} --evaluation-settings {params.evaluation:q}"
        " --crop-settings {params.crop:q} --threads {threads} --out {output.metrics}"
        " --details {output.details} --tables-dir {params.tables_dir} --plots-dir {params.plots_dir} > {log} 2>&1"


rule report:
    input:
        metrics="results/metrics.json",
        details="results/evaluation/details.json",
        plots=EVALUATION_PLOTS,
        gan_curves=["results/gan/train.tsv", "results/gan/val.tsv"] + ABLATION_CURVES,
        syncer_curves=expand(
            "results/syncers/curves/{set}_level{level}.tsv", set=SYNCER_SETS, level=LEVELS
        ),
        syncer_metrics="results/syncers/eval_metrics.json",
        render=REPORT_RENDER,
    output:
        report="results/report.html",
        plots=["results/plots/training_gan.png", "results/plots/training_syncers.png"],
    log:
        "logs/evaluate/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        render=render_args(REPORT_RENDER),
    shell:
        "mssync report --metrics {input.metrics} --details {input.details} --plots-dir results/plots"
        " --gan-curves {input.gan_curves} --syncer-curves {input.syncer_curves}"
        " --syncer-metrics {input.syncer_metrics} {params.render} --out {output.report} > {log} 2>&1"


EVALUATE_TARGETS = (
    ["results/metrics.json", "results/evaluation/details.json", "results/report.html"]
    + EVALUATION_TABLES
    + EVALUATION_PLOTS
    + ["results/plots/training_gan.png", "results/plots/training_syncers.png"]
)


rule evaluate_phase:
    input:
        EVALUATE_TARGETS,
