"""What a run shows on the console: the plan before the work, the summary after it."""

from __future__ import annotations

from grand_engine.runtime.plan import Plan
from grand_engine.runtime.run import RunObserver, RunSummary


class ConsoleReport(RunObserver):
    """Prints the plan line before the work and the summary table after it."""

    def planned(self, plan: Plan, invalidated: list[tuple[str, str]]) -> None:
        if invalidated:
            stages = sorted({stage for stage, _ in invalidated})
            print(f"invalidated {len(invalidated)} (stage, unit) records of {', '.join(stages)}")
        print(
            f"{len(plan.units)} units from {len(plan.shards)} shard(s); {plan.pairs_todo()} (stage, unit) tasks to "
            f"run over {len(plan.pipeline.order)} stages"
        )

    def finished(self, summary: RunSummary) -> None:
        print(summary.table())
