# mssync: MS-Sync talking-head pipeline. Thin by design: logic lives in src/mssync (`mssync <command>`).
from snakemake.utils import min_version

from mssync.core.config import validate_params
from mssync.core.recovery import recover_workdir
from mssync.data.shards import SHARD_PATTERN

min_version("9.0")


configfile: "params.yaml"


# Stops with "<file>: invalid value at 'section.key': ..." on a bad value, naming the --configfile
# the value may come from (it overrides params.yaml).
validate_params(
    config, source=" over ".join([*map(str, workflow.overwrite_configfiles), "params.yaml"])
)


include: "workflow/rules/common.smk"


wildcard_constraints:
    shard=SHARD_PATTERN,
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
include: "workflow/rules/crossval.smk"


# Before Snakemake plans or locks (only in the run you started, never inside a job): clear the
# lock a killed run left behind, and move aside damaged artifacts so their jobs are planned again.
if workflow.is_main_process:
    recover_workdir(all_targets(), CLIPS_RECORDS + FEATURES_RECORDS, PER_CLIP_DIRS)


rule all:
    default_target: True
    input:
        all_targets(),
