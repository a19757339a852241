"""Record-completion figures for the HIM dashboard: open deficiencies by physician and by
age, delinquent records, and the Joint Commission delinquent record rate.

The rate is the Joint Commission's: the number of delinquent records divided by the average
monthly discharges (AMD, discharges of the last ``average_months`` months over that many
months); the Joint Commission expects it not to exceed 50% of the AMD. Both counts cover the
encounter classes in ``delinquency.rate_classes`` (inpatient and observation by default).
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from chartkeeper.chart.completion.analysis import (
    AGE_BANDS,
    OVER_30,
    Deficiency,
    analysis_start,
    check_encounter,
)
from chartkeeper.chart.completion.rules import CompletionRules
from chartkeeper.chart.completion.scan import discharged_in
from chartkeeper.store import Store

UNASSIGNED = "unassigned"  # open deficiencies whose record names no physician
BANDS = tuple(label for _, _, label in AGE_BANDS) + (OVER_30,)


@dataclass(frozen=True)
class CompletionSummary:
    """The dashboard's figures as of one day. Physicians are ``Practitioner/id`` references
    (``UNASSIGNED`` when the record names none); bands are days since discharge."""

    as_of: date
    open_deficiencies: int
    by_rule: dict[str, int]
    by_physician: dict[str, int]
    by_age_band: dict[str, int]
    by_physician_and_band: dict[str, dict[str, int]]
    incomplete_records: int
    delinquent_records: int  # every analysed class
    late_history_and_physical: int
    period_start: date  # first discharge day of the AMD period
    discharges: int  # in the period, rate classes
    average_monthly_discharges: float
    delinquent_rate_records: int  # delinquent records of the rate classes
    delinquency_rate: float | None  # delinquent_rate_records / AMD; None without discharges
    rate_limit: float
    deficiencies: list[Deficiency] = field(default_factory=list, repr=False)

    @property
    def meets_standard(self) -> bool | None:
        """Whether the delinquency rate is within the limit (None: no discharges)."""
        if self.delinquency_rate is None:
            return None
        return self.delinquency_rate <= self.rate_limit

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values (for the API and the CLI's ``--json``)."""
        return {
            "asOf": self.as_of.isoformat(), "openDeficiencies": self.open_deficiencies,
            "byRule": self.by_rule, "byPhysician": self.by_physician,
            "byAgeBand": self.by_age_band, "byPhysicianAndBand": self.by_physician_and_band,
            "incompleteRecords": self.incomplete_records,
            "delinquentRecords": self.delinquent_records,
            "lateHistoryAndPhysical": self.late_history_and_physical,
            "periodStart": self.period_start.isoformat(), "discharges": self.discharges,
            "averageMonthlyDischarges": self.average_monthly_discharges,
            "delinquentRateRecords": self.delinquent_rate_records,
            "delinquencyRate": self.delinquency_rate, "rateLimit": self.rate_limit,
            "meetsStandard": self.meets_standard,
        }


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier (the month's last day if shorter)."""
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def summarize(deficiencies: Iterable[Deficiency], as_of: date, rules: CompletionRules,
              discharges: int) -> CompletionSummary:
    """The figures from deficiencies already found and the period's discharge count."""
    found = list(deficiencies)
    open_ones = [d for d in found if d.actionable]
    by_physician_and_band: dict[str, dict[str, int]] = {}
    for deficiency in open_ones:
        row = by_physician_and_band.setdefault(deficiency.physician or UNASSIGNED,
                                               dict.fromkeys(BANDS, 0))
        row[deficiency.age_band] += 1
    delinquency = rules.delinquency
    delinquent = {d.encounter for d in open_ones if d.delinquent}
    delinquent_rated = {d.encounter for d in open_ones if d.delinquent
                        and d.encounter_class in delinquency.rate_classes}
    average = discharges / delinquency.average_months
    bands = Counter(d.age_band for d in open_ones)
    return CompletionSummary(
        as_of=as_of, open_deficiencies=len(open_ones),
        by_rule=dict(sorted(Counter(d.rule for d in open_ones).items())),
        by_physician=dict(sorted(Counter(d.physician or UNASSIGNED for d in open_ones).items(),
                                 key=lambda item: (-item[1], item[0]))),
        by_age_band={band: bands[band] for band in BANDS},
        by_physician_and_band=dict(sorted(by_physician_and_band.items())),
        incomplete_records=len({d.encounter for d in open_ones}),
        delinquent_records=len(delinquent),
        late_history_and_physical=sum(d.kind == "late" for d in found),
        period_start=months_before(as_of, delinquency.average_months) + timedelta(days=1),
        discharges=discharges, average_monthly_discharges=average,
        delinquent_rate_records=len(delinquent_rated),
        delinquency_rate=len(delinquent_rated) / average if average else None,
        rate_limit=delinquency.rate_limit, deficiencies=found)


def completion_summary(store: Store, as_of: date | None = None,
                       rules: CompletionRules | None = None) -> CompletionSummary:
    """Analyse the store as of ``as_of`` (default today) and count the dashboard's figures,
    in one pass over the discharges."""
    rules = rules or CompletionRules()
    as_of = as_of or date.today()
    delinquency = rules.delinquency
    period_start = months_before(as_of, delinquency.average_months) + timedelta(days=1)
    since = analysis_start(rules, as_of)
    classes = rules.analysed_classes()
    found: list[Deficiency] = []
    discharges = 0
    scan_from = None if since is None else min(since, period_start)
    for batch in discharged_in(store, scan_from, as_of):
        for record in batch:
            discharged = record.discharged
            if discharged is None or discharged.date() > as_of:
                continue
            day = discharged.date()
            if day >= period_start and record.encounter_class in delinquency.rate_classes:
                discharges += 1
            if record.encounter_class in classes and (since is None or day >= since):
                found.extend(check_encounter(record, rules, as_of))
    found.sort(key=lambda d: (d.discharged, d.encounter, d.rule, d.target))
    return summarize(found, as_of, rules, discharges)


def physician_names(store: Store, references: Iterable[str]) -> dict[str, str]:
    """Display names of practitioners (``Practitioner/id`` -> "Dr. Given Family")."""
    ids = sorted({ref.split("/", 1)[1] for ref in references
                  if ref.startswith("Practitioner/")})
    names: dict[str, str] = {}
    for start in range(0, len(ids), 200):
        chunk = ids[start:start + 200]
        with store.read() as txn:
            page = txn.search_params("Practitioner", [("_id", ",".join(chunk)),
                                                      ("_count", str(len(chunk)))])
        for practitioner in page.matches:
            name = (practitioner.get("name") or [{}])[0]
            text = name.get("text") or " ".join(
                [*name.get("prefix", []), *name.get("given", []), name.get("family", "")])
            names[f"Practitioner/{practitioner['id']}"] = text.strip() or practitioner["id"]
    return names
