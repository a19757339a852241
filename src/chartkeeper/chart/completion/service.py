"""The HIM slice's public API: what the CLI, the web pages and other slices call."""

from chartkeeper.chart.completion.analysis import Deficiency, analyze, check_encounter
from chartkeeper.chart.completion.rules import (
    CompletionRules,
    RulesError,
    load_rules,
    parse_rules,
    rules_to_toml,
)
from chartkeeper.chart.completion.summary import (
    CompletionSummary,
    completion_summary,
    physician_names,
)
from chartkeeper.chart.completion.tasks import (
    DEFICIENCY_SYSTEM,
    TASK_IDENTIFIER_SYSTEM,
    TaskSync,
    assign_task,
    open_deficiency_tasks,
    sync_tasks,
)

__all__ = [
    "DEFICIENCY_SYSTEM",
    "TASK_IDENTIFIER_SYSTEM",
    "CompletionRules",
    "CompletionSummary",
    "Deficiency",
    "RulesError",
    "TaskSync",
    "analyze",
    "assign_task",
    "check_encounter",
    "completion_summary",
    "load_rules",
    "open_deficiency_tasks",
    "parse_rules",
    "physician_names",
    "rules_to_toml",
    "sync_tasks",
]
