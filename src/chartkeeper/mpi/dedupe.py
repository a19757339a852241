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

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chartkeeper.store import Store

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
PAGE = 1000
M_FLOOR = 1e-5  # the least m a trained level keeps (see train)
# The columns splink compares, in the order of ``settings()``'s comparisons.
COMPARED = ("first_name", "surname", "dob", "sex", "postcode", "street", "phone", "ssn")


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
class Evidence:
    """One compared field of a pair: both values, the agreement level splink found and its
    match weight (log2 of the Bayes factor: positive for agreement, negative against)."""

    field: str
    left: str | None
    right: str | None
    level: str
    weight: float


@dataclass(frozen=True)
class Pair:
    left: str  # Patient ids
    right: str
    probability: float
    weight: float
    evidence: tuple[Evidence, ...] = ()


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


def phonetic(name: str | None) -> list[str] | None:
    """Phonetic codes of a name (Metaphone and NYSIIS, jellyfish): names that sound alike
    share one. None for a name not written in Latin letters, where the codes mean nothing."""
    if not name:
        return None
    folded = "".join(c for c in unicodedata.normalize("NFKD", name)
                     if not unicodedata.combining(c))
    letters = re.sub(r"[^a-z]", "", folded.lower())
    if not letters or len(letters) < len(re.sub(r"[\s'\-.]", "", folded)):
        return None
    import jellyfish

    return sorted({jellyfish.metaphone(letters), jellyfish.nysiis(letters)} - {""}) or None


def _birth_date(value: Any, today: dt.date | None = None) -> str | None:
    """A full birth date not in the future (a future one is a data-entry error: no evidence)."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        born = dt.date.fromisoformat(value)
    except ValueError:
        return None
    return value if born <= (today or dt.date.today()) else None


def patient_row(patient: dict[str, Any]) -> dict[str, Any]:
    """The fields a patient is matched on (lower-cased names, digits only for numbers)."""
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    address = (patient.get("address") or [{}])[0]
    phone = next((t.get("value") for t in patient.get("telecom") or []
                  if t.get("system") == "phone"), None)
    ssn = next((i.get("value") for i in patient.get("identifier") or []
                if i.get("system") == SSN_SYSTEM), None)
    first_name, surname = _word((name.get("given") or [None])[0]), _word(name.get("family"))
    return {
        "unique_id": str(patient["id"]),
        "first_name": first_name,
        "surname": surname,
        "first_name_phonetic": phonetic(first_name),
        "surname_phonetic": phonetic(surname),
        "dob": _birth_date(patient.get("birthDate")),
        "sex": patient.get("gender") if patient.get("gender") in ("male", "female") else None,
        "postcode": _word(address.get("postalCode")),
        "street": _word(" ".join(address.get("line") or [])),
        "phone": _digits(phone),
        "ssn": _digits(ssn),
    }


def patient_rows(store: Store) -> Iterator[dict[str, Any]]:
    """Every current Patient not merged into another, as a row, a page at a time."""
    offset = 0
    while True:
        with store.read() as txn:
            page = txn.search_params("Patient", [("_count", str(PAGE)), ("_offset", str(offset)),
                                                 ("_sort", "_id"), ("_total", "none")])
        for patient in page.matches:
            if not any(link.get("type") == "replaced-by" for link in patient.get("link", [])):
                yield patient_row(patient)  # a record merged into another is not matched
        if len(page.matches) < PAGE:
            return
        offset += PAGE


def settings() -> Any:
    """The comparisons and blocking rules, defined once.

    Blocking keeps the candidate pairs near linear in the number of patients: each rule joins
    on a key that few patients share (an SSN, a phone, a birth date with an initial, a name
    with part of the birth date, a name or initials with a postcode). A surname alone would
    not: at a million patients each common surname pairs millions of strangers."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on
    from splink.blocking_rule_library import CustomRule

    def name_levels(column: str) -> list[Any]:
        """Exact (weighed by how common the name is), close by Jaro-Winkler, alike by a
        phonetic code, less close."""
        return [cll.ExactMatchLevel(column).configure(tf_adjustment_column=column),
                cll.JaroWinklerLevel(column, 0.92), cll.JaroWinklerLevel(column, 0.88),
                cll.ArrayIntersectLevel(f"{column}_phonetic", min_intersection=1),
                cll.JaroWinklerLevel(column, 0.7)]

    # Given and family name swapped is weighed once, as a level of the first name; for the
    # surname it is a null level (no evidence), or the swap would count twice.
    exact_first, *other_first = name_levels("first_name")
    first_name = cl.CustomComparison(output_column_name="first_name", comparison_levels=[
        cll.NullLevel("first_name"), exact_first,
        cll.ColumnsReversedLevel("first_name", "surname", symmetrical=True).configure(
            label_for_charts="given and family name swapped"),
        *other_first, cll.ElseLevel()])
    surname = cl.CustomComparison(output_column_name="surname", comparison_levels=[
        cll.Or(cll.NullLevel("surname"),
               cll.ColumnsReversedLevel("first_name", "surname", symmetrical=True)).configure(
            is_null_level=True,
            label_for_charts="surname is null, or swapped with the given name (weighed by "
                             "first_name)"),
        *name_levels("surname"), cll.ElseLevel()])
    return SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("ssn"), block_on("phone"),
            # a birth date, and an initial or the postcode: a birth date alone pairs about 16
            # million strangers among a million patients, a placeholder date far more
            CustomRule("l.dob = r.dob and (substr(l.first_name, 1, 1) = substr(r.first_name, 1, 1)"
                       " or substr(l.surname, 1, 1) = substr(r.surname, 1, 1)"
                       " or substr(l.first_name, 1, 1) = substr(r.surname, 1, 1)"
                       " or substr(l.surname, 1, 1) = substr(r.first_name, 1, 1)"
                       " or l.postcode = r.postcode)"),
            # a full name and the birth year, or the birth month and day (one of them mistyped)
            block_on("first_name", "surname", "substr(dob, 1, 4)"),
            block_on("first_name", "surname", "substr(dob, 6, 5)"),
            CustomRule("l.first_name = r.surname and l.surname = r.first_name"),  # swapped
            block_on("surname", "postcode"), block_on("first_name", "postcode"),
            block_on("substr(first_name, 1, 1)", "substr(surname, 1, 1)", "postcode"),
        ],
        comparisons=[
            first_name, surname,
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.DamerauLevenshteinAtThresholds("postcode", [1]),
            cl.LevenshteinAtThresholds("street", [2]),
            cl.DamerauLevenshteinAtThresholds("phone", [1]),
            cl.DamerauLevenshteinAtThresholds("ssn", [1]),
        ],
        retain_matching_columns=True,
        retain_intermediate_calculation_columns=True,
    )


def dedupe(store: Store, thresholds: Thresholds | None = None,
           on_progress: Callable[[str], None] | None = None) -> DedupeResult:
    """Find the store's duplicate patients: trained on the store's own data."""
    say = on_progress or (lambda _message: None)
    rows = list(patient_rows(store))
    say(f"{len(rows)} patients read")
    return dedupe_rows(rows, thresholds, on_progress=say)


def dedupe_rows(rows: list[dict[str, Any]], thresholds: Thresholds | None = None, *,
                model: dict[str, Any] | None = None,
                on_progress: Callable[[str], None] | None = None) -> DedupeResult:
    """Score the likely pairs among ``rows`` (``patient_row``s) on DuckDB: with a trained
    ``model`` (splink's JSON) as it is, or else one trained by EM on the rows themselves."""
    import duckdb
    import pyarrow as pa
    from splink import DuckDBAPI, Linker

    thresholds = thresholds or Thresholds()
    say = on_progress or (lambda _message: None)
    result = DedupeResult(len(rows))
    if len(rows) < 2:
        return result
    con = duckdb.connect()
    try:
        con.register("patient_rows", pa.Table.from_pylist(rows))
        con.execute("create table patients as select * from patient_rows")
        con.unregister("patient_rows")
        api = DuckDBAPI(connection=con)
        linker = Linker(api.register("patients"), model or settings(), log_level=30)
        if model is None:
            say("training")
            try:
                result.note = train(linker)
            except ValueError as exc:  # EM drove a level's m to 0: too few records to learn
                result.note = f"the model could not be trained on these records ({exc})"[:500]
            if result.note:
                say(result.note)
                return result
        say("scoring candidate pairs")
        records = linker.inference.predict(
            threshold_match_probability=thresholds.review).as_record_list()
        result.model = linker.misc.save_model_to_json()
    finally:
        con.close()
    classify(result, pairs(records, result.model), thresholds)
    say(f"{len(result.links)} links, {len(result.review)} to review")
    return result


def train(linker: Any) -> str:
    """Estimate the model's parameters from the linker's own records: lambda from two
    deterministic rules, u by random sampling, m by EM on two independent blockings (a birth
    date; a full name). u and each EM session sample at most two million pairs, and EM
    iterates on the counts of agreement patterns without term frequencies (prediction uses
    them), so training stays bounded as the patients grow. The samples are seeded: the same
    records train the same model. Returns why it could not, or ""."""
    from splink import block_on
    from splink.internals.exceptions import EMTrainingException

    most_pairs = 2_000_000
    linker.training.estimate_probability_two_random_records_match(
        [block_on("ssn"), block_on("first_name", "surname", "dob")], recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=most_pairs, seed=1)
    # Random pairs are (almost all) non-matches. A level that none of them reached (an exact
    # SSN: strangers do not share one) gets no u from splink, which would fall back on a
    # generic default that weighs an exact SSN below a near one. Seen in none of n pairs,
    # u is at most 3/n (95%, the rule of three): use that bound.
    records = 0
    for table in linker._input_tables_dict.values():
        counted = linker.misc.query_sql(f"select count(*) as n from {table.physical_name}")
        records += int(counted.as_record_list()[0]["n"])
        counted.drop_table_from_database_and_remove_from_cache()
    sampled = min(most_pairs, records * (records - 1) // 2)
    for comparison in linker._settings_obj.comparisons:
        for level in comparison.comparison_levels:
            if sampled and not level.is_null_level and level._u_probability is None:
                level.u_probability = min(1.0, 3 / sampled)
    try:
        for blocking in (block_on("dob"), block_on("first_name", "surname")):
            linker.training.estimate_parameters_using_expectation_maximisation(
                blocking, estimate_without_term_frequencies=True, max_pairs=most_pairs)
    except EMTrainingException as exc:
        # Too few comparable records to learn how much agreement means: link nothing rather
        # than guess (an overlay is far worse than a missed duplicate).
        return f"not enough comparable records to train the model ({exc})"[:500]
    # EM gives a level that no duplicate in the training data reached (a year typed with two
    # digits swapped, a sex keyed wrongly) an m near 0: a weight of -200 bits, a veto no
    # other field can outweigh. Real registrations do make those errors; floor m so that a
    # single disagreeing field weighs at most about as much as an exact SSN agreeing.
    for comparison in linker._settings_obj.comparisons:
        for level in comparison.comparison_levels:
            if not level.is_null_level and isinstance(level._m_probability, float) and \
                    level._m_probability < M_FLOOR:
                level.m_probability = M_FLOOR
    return ""


def _levels(model: dict[str, Any]) -> dict[str, dict[int, str]]:
    """Comparison output column -> gamma value -> the level's label, from the model."""
    levels: dict[str, dict[int, str]] = {}
    for comparison in model.get("comparisons", []):
        name = comparison["output_column_name"]
        labels: dict[int, str] = {}
        gamma = len([lv for lv in comparison["comparison_levels"]
                     if not lv.get("is_null_level")]) - 1
        for level in comparison["comparison_levels"]:
            label = level.get("label_for_charts") or level["sql_condition"]
            if level.get("is_null_level"):
                labels[-1] = label
            else:
                labels[gamma] = label
                gamma -= 1
        levels[name] = labels
    return levels


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return ", ".join(value) if isinstance(value, list) else str(value)


def pairs(records: Iterable[dict[str, Any]], model: dict[str, Any]) -> Iterator[Pair]:
    """splink's scored records as ``Pair``s with the field-by-field evidence."""
    levels = _levels(model)
    for record in records:
        evidence = []
        for name in COMPARED:
            gamma = int(record.get(f"gamma_{name}", -1))
            # splink's match weight of the level, with its term-frequency adjustment (a
            # rare name agreeing weighs more than a common one)
            weight = float(record.get(f"mw_{name}") or 0.0) + float(
                record.get(f"mw_tf_adj_{name}") or 0.0)
            evidence.append(Evidence(name, _text(record.get(f"{name}_l")),
                                     _text(record.get(f"{name}_r")),
                                     levels.get(name, {}).get(gamma, str(gamma)),
                                     round(weight, 3)))
        left, right = sorted((str(record["unique_id_l"]), str(record["unique_id_r"])))
        yield Pair(left, right, float(record["match_probability"]),
                   float(record["match_weight"]), tuple(evidence))


def classify(result: DedupeResult, scored: Iterable[Pair], thresholds: Thresholds) -> None:
    """Links at or above the upper threshold, the uncertain band to review, best first."""
    for pair in scored:
        if pair.probability >= thresholds.auto_link:
            result.links.append(pair)
        elif pair.probability >= thresholds.review:
            result.review.append(pair)
    result.links.sort(key=lambda p: (-p.weight, p.left, p.right))
    result.review.sort(key=lambda p: (-p.weight, p.left, p.right))
