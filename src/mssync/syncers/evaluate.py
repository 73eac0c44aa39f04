"""`mssync eval-syncers`: every level of one syncer set scored on the test split (held-out speakers)."""

from __future__ import annotations

import logging
from pathlib import Path

from mssync.core.atomic import write_json_atomic
from mssync.core.reproducible import provenance, training_runs
from mssync.motion.space import MotionSpace
from mssync.syncers.metrics import evaluate_level
from mssync.syncers.model import Syncer
from mssync.syncers.windows import prepare_level

log = logging.getLogger(__name__)


def evaluate_syncers(*, test: Path, space_path: Path, models: list[Path], out: Path) -> dict:
    """Each level scored with the group size and pyramid kernel it was trained with (its checkpoint's);
    "run" is what this scoring computed with, "training_runs" what each level was trained with."""
    space = MotionSpace.load(space_path)
    report: dict = {"split": str(test), "levels": {}, "run": provenance(), "training_runs": {}}
    for path in models:
        model = Syncer.load(path)
        clips = prepare_level(test, space, model.level, model.kernel)
        result = evaluate_level(model, clips, model.settings.group_size)
        result["clips"] = len(clips)
        report["levels"][f"level{model.level}"] = result
        report["training_runs"].update(training_runs({f"level{model.level}": path}))
        r = result["retrieval"]
        log.info("level %d: top-1 %.3f (chance %.3f, 95%% CI %.3f-%.3f, K<=%d, %d queries); LSE-C own %.3f vs other %s; "
                 "offsets within 2 frames %.0f%%", model.level, r["top1"], r["chance"], *r["ci95"], r["K_max"],
                 r["queries"], result["lse_own_audio"]["lse_c"], result["lse_other_clip_audio"]["lse_c"],
                 100 * result["offsets"]["within_2_frames"])
    write_json_atomic(out, report)
    return report
