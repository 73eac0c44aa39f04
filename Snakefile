# mssync: MS-Sync talking-head pipeline. Thin by design: logic lives in src/mssync (`mssync <command>`).
from snakemake.utils import min_version

from mssync.core.config import validate_params

min_version("9.0")


configfile: "params.yaml"


# Stops with "params.yaml: invalid value at 'section.key': ..." on a bad value.
validate_params(config)


include: "workflow/rules/common.smk"


wildcard_constraints:
    clip="|".join(re.escape(c) for c in CLIPS),
    split="|".join(SPLITS),
    set="|".join(SYNCER_SETS),
    level="|".join(str(level) for level in LEVELS),
    ablation="|".join(re.escape(name) for name in ABLATIONS) or "(?!)",


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/syncers.smk"
include: "workflow/rules/gan.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets(),
