"""Coders' decisions as training data, the ranking model learned from them, and the reports.

The decisions are stored in :mod:`chartkeeper.coding.feedback_store` (the ``coding_feedback``
table, one row per decision), the ranking model learned from them and the re-ranking it drives
are in :mod:`chartkeeper.coding.feedback_model`, and the productivity and accuracy reports in
:mod:`chartkeeper.coding.feedback_reports`; this module re-exports all three, so importers need
only ``chartkeeper.coding.feedback``.
"""

from __future__ import annotations

from chartkeeper.coding.feedback_model import (
    IMPLICIT,
    MAX_SCORE,
    OTHER_SECTION,
    PRIOR_STRENGTH,
    Learned,
    RankingModel,
    Tally,
    learn,
    load_model,
    rerank,
)
from chartkeeper.coding.feedback_reports import (
    Accuracy,
    AccuracyReport,
    Productivity,
    accuracy,
    productivity,
)
from chartkeeper.coding.feedback_store import (
    KINDS,
    OUTCOMES,
    FeedbackError,
    FeedbackRow,
    Outcome,
    coding_feedback,
    create_feedback_schema,
    decisions_for,
    record,
)

__all__ = [
    "Accuracy",
    "AccuracyReport",
    "FeedbackError",
    "FeedbackRow",
    "IMPLICIT",
    "KINDS",
    "Learned",
    "MAX_SCORE",
    "OTHER_SECTION",
    "OUTCOMES",
    "Outcome",
    "PRIOR_STRENGTH",
    "Productivity",
    "RankingModel",
    "Tally",
    "accuracy",
    "coding_feedback",
    "create_feedback_schema",
    "decisions_for",
    "learn",
    "load_model",
    "productivity",
    "record",
    "rerank",
]
