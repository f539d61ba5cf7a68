"""The runner: ``magphase run`` as a loop over :data:`magphase.stages.STAGES`, and one stage at a time
for the CLI verbs (:func:`run_stage`), both behind the same completion markers."""

from magphase.run.runner import (
    StagePlan,
    check_inputs,
    plan_run,
    run_pipeline,
    run_stage,
    stage_hashes,
    stage_sections,
    stage_status,
)

__all__ = [
    "StagePlan",
    "check_inputs",
    "plan_run",
    "run_pipeline",
    "run_stage",
    "stage_hashes",
    "stage_sections",
    "stage_status",
]
