"""Stage ``report``: ``RUN/report/report.md`` from what the other stages wrote (it computes nothing)."""

from __future__ import annotations

from typing import Any

from magphase.stages.base import RunContext, Stage


def run(ctx: RunContext) -> dict[str, Any]:
    from magphase.report.report import write_report

    return {"report": str(write_report(ctx.layout, ctx.cfg))}


STAGE = Stage(
    name="report",
    description="every table and figure with the paper's numbers beside (Markdown, JSON, PNG)",
    run=run,
    config=(),
    writes=("report",),
)
