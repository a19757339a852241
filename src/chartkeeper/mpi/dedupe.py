"""Batch deduplication of the store's patients with splink (Fellegi-Sunter, trained by EM)
on DuckDB.

Patients are read from the store in pages and flattened to the fields people are matched on
(given and family name, birth date, sex, address, phone, SSN); splink compares the pairs that
share a blocking key, estimates the m and u probabilities from the data (u by random
sampling, m by expectation maximisation on two independent blockings), and scores every
candidate pair. Pairs at or above ``auto_link`` are links; those between ``review`` and
``auto_link`` go to a person; the rest are not the same patient.

The comparisons are defined once here; the trained model is splink's JSON settings, so it
can be saved and used on another backend (Spark) unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chartkeeper.store import Store

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
PAGE = 1000


@dataclass(frozen=True)
class Thresholds:
    """Match probabilities: at or above ``auto_link`` a link; from ``review`` a person decides."""

    auto_link: float = 0.999
    review: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.review <= self.auto_link <= 1:
            raise ValueError("thresholds must satisfy 0 < review <= auto_link <= 1, got "
                             f"review={self.review}, auto_link={self.auto_link}")


@dataclass(frozen=True)
class Pair:
    left: str  # Patient ids
    right: str
    probability: float
    weight: float


@dataclass
class DedupeResult:
    patients: int
    links: list[Pair] = field(default_factory=list)
    review: list[Pair] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # splink's trained settings
    note: str = ""  # why nothing was scored, when that happens


def _digits(value: Any) -> str | None:
    text = re.sub(r"\D", "", str(value or ""))
    return text or None


def _word(value: Any) -> str | None:
    text = re.sub(r"\s+", " ", str(value or "")).strip().lower()
    return text or None


def patient_row(patient: dict[str, Any]) -> dict[str, Any]:
    """The fields a patient is matched on (lower-cased names, digits only for numbers)."""
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    address = (patient.get("address") or [{}])[0]
    phone = next((t.get("value") for t in patient.get("telecom") or []
                  if t.get("system") == "phone"), None)
    ssn = next((i.get("value") for i in patient.get("identifier") or []
                if i.get("system") == SSN_SYSTEM), None)
    birth = patient.get("birthDate")
    return {
        "unique_id": str(patient["id"]),
        "first_name": _word((name.get("given") or [None])[0]),
        "surname": _word(name.get("family")),
        "dob": birth if isinstance(birth, str) and len(birth) == 10 else None,
        "sex": patient.get("gender") if patient.get("gender") in ("male", "female") else None,
        "postcode": _word(address.get("postalCode")),
        "street": _word(" ".join(address.get("line") or [])),
        "phone": _digits(phone),
        "ssn": _digits(ssn),
    }


def patient_rows(store: Store) -> Iterator[dict[str, Any]]:
    """Every current Patient as a row, a page at a time."""
    offset = 0
    while True:
        with store.read() as txn:
            page = txn.search_params("Patient", [("_count", str(PAGE)), ("_offset", str(offset)),
                                                 ("_sort", "_id"), ("_total", "none")])
        for patient in page.matches:
            yield patient_row(patient)
        if len(page.matches) < PAGE:
            return
        offset += PAGE


def settings() -> Any:
    """The comparisons and blocking rules, defined once."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    return SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("surname"), block_on("dob"), block_on("phone"), block_on("ssn"),
            block_on("first_name", "postcode"),
            block_on("substr(first_name, 1, 1)", "substr(surname, 1, 1)", "postcode"),
        ],
        comparisons=[
            cl.NameComparison("first_name"), cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"), cl.ExactMatch("postcode"),
            cl.LevenshteinAtThresholds("street", [2]),
            cl.LevenshteinAtThresholds("phone", [1]),
            cl.LevenshteinAtThresholds("ssn", [1]),
        ],
    )


def dedupe(store: Store, thresholds: Thresholds | None = None,
           on_progress: Callable[[str], None] | None = None) -> DedupeResult:
    """Find the store's duplicate patients: trained on the store's own data."""
    import duckdb
    import pyarrow as pa
    from splink import DuckDBAPI, Linker, block_on
    from splink.internals.exceptions import EMTrainingException

    thresholds = thresholds or Thresholds()
    say = on_progress or (lambda _message: None)
    rows = list(patient_rows(store))
    say(f"{len(rows)} patients read")
    result = DedupeResult(len(rows))
    if len(rows) < 2:
        return result
    con = duckdb.connect()
    con.register("patient_rows", pa.Table.from_pylist(rows))
    con.execute("create table patients as select * from patient_rows")
    api = DuckDBAPI(connection=con)
    linker = Linker(api.register("patients"), settings(), log_level=30)
    say("training")
    linker.training.estimate_probability_two_random_records_match(
        [block_on("ssn"), block_on("first_name", "surname", "dob")], recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=2_000_000)
    try:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))
    except EMTrainingException as exc:
        # Too few comparable records to learn how much agreement means: link nothing rather
        # than guess (an overlay is far worse than a missed duplicate).
        con.close()
        result.note = f"not enough comparable records to train the model ({exc})"[:500]
        say(result.note)
        return result
    say("scoring candidate pairs")
    scored = linker.inference.predict(threshold_match_probability=thresholds.review)
    for record in scored.as_record_list():
        pair = Pair(str(record["unique_id_l"]), str(record["unique_id_r"]),
                    float(record["match_probability"]), float(record["match_weight"]))
        (result.links if pair.probability >= thresholds.auto_link else result.review).append(
            pair)
    result.model = linker.misc.save_model_to_json()
    con.close()
    say(f"{len(result.links)} links, {len(result.review)} to review")
    return result
