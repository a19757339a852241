"""Real-time matching: the probable duplicates of one patient, before a record is created.

``Patient/$match`` (FHIR R4), registration and every incoming Patient ask the same question
the batch run answers, for one record: candidates come from the store's own search indexes
(identifiers, phone, the birth date and its likely mistypings), and each is scored with the
stored trained model.

Scoring one record against a few hundred candidates through splink's public API costs about
120 ms of SQL generation per call; so ``Scorer`` asks splink once per model for the SQL it
would run (each comparison's CASE statement, each level's match weight and term-frequency
adjustment) and runs that one statement on DuckDB per call, in a few milliseconds. The
numbers are splink's own: ``tests/mpi/test_match.py`` checks them against
``linker.inference.score_pairs``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chartkeeper.mpi.dedupe import SSN_SYSTEM, Pair, Thresholds, pairs, patient_row, settings
from chartkeeper.store.service import Txn

Resource = dict[str, Any]
# The search parameter that counts a matched column's values, for term frequencies.
TF_PARAMS = {"first_name": "given", "surname": "family", "dob": "birthdate",
             "postcode": "address-postalcode", "street": "address", "phone": "phone"}
PER_BLOCK = 100  # candidates from each index lookup
GRADE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/match-grade"
_local = threading.local()


def _connection() -> Any:
    import duckdb

    con = getattr(_local, "duckdb", None)
    if con is None:
        con = _local.duckdb = duckdb.connect()
    return con


class Scorer:
    """A trained model (splink's JSON) compiled to one DuckDB statement."""

    def __init__(self, model: dict[str, Any], *, trained: bool = True) -> None:
        import duckdb
        import pyarrow as pa
        from splink import DuckDBAPI, Linker

        con = duckdb.connect()
        try:
            api = DuckDBAPI(connection=con)
            linker = Linker(api.register(pa.Table.from_pylist([{"unique_id": "-"}])), model,
                            log_level=30)
            compiled = linker._settings_obj  # splink's parsed settings: the SQL it would run
            self.tf_columns = sorted(c.unquote().name for c in compiled._term_frequency_columns)
            lam = float(compiled._probability_two_random_records_match)
            self.prior = math.log2(lam / (1 - lam))
            self.model = model
            self.trained = trained
            self.columns = [c for c in _row_columns() if c != "unique_id"]
            cases, weights = [], []
            for comparison in compiled.comparisons:
                gamma = comparison._gamma_column_name
                levels = comparison.comparison_levels
                name = comparison.output_column_name
                cases.append(comparison._case_statement)
                weights.append("CASE " + " ".join(lv._match_weight_sql(gamma) for lv in levels)
                               + f" END AS mw_{name}")
                weights.append("CASE " + " ".join(lv._tf_adjustment_sql(gamma, levels)
                                                  for lv in levels) + f" END AS mw_tf_adj_{name}")
                self.comparisons = [c.output_column_name for c in compiled.comparisons]
        finally:
            con.close()
        sides = ", ".join(f'{side}."{c}" AS "{c}_{side}"' for c in
                          [*self.columns, *(f"tf_{t}" for t in self.tf_columns)]
                          for side in "lr")
        self.sql = (
            f"SELECT *, {', '.join(weights)} FROM ("
            f"SELECT l.unique_id AS unique_id_l, r.unique_id AS unique_id_r, {sides}, "
            f"{', '.join(cases)} FROM __mpi_record l CROSS JOIN __mpi_candidates r)")

    def score(self, record: dict[str, Any], candidates: list[dict[str, Any]],
              frequencies: dict[str, dict[str, float]] | None = None) -> list[Pair]:
        """``record`` against each candidate (``patient_row``s); ``frequencies`` gives each
        name's share of the patients (term frequency), for the rarer-name adjustment."""
        import pyarrow as pa

        if not candidates:
            return []
        frequencies = frequencies or {}
        schema = _schema(self.tf_columns)

        def table(rows: list[dict[str, Any]]) -> Any:
            return pa.Table.from_pylist([
                {**{c: row.get(c) for c in self.columns + ["unique_id"]},
                 **{f"tf_{t}": frequencies.get(t, {}).get(row.get(t) or "")
                    for t in self.tf_columns}}
                for row in rows], schema=schema)

        con = _connection()
        con.register("__mpi_record", table([record]))
        con.register("__mpi_candidates", table(candidates))
        try:
            cursor = con.execute(self.sql)
            names = [d[0] for d in cursor.description]
            records = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        finally:
            con.unregister("__mpi_record")
            con.unregister("__mpi_candidates")
        for scored in records:
            weight = self.prior + sum(
                float(scored[f"mw_{c}"] or 0) + float(scored[f"mw_tf_adj_{c}"] or 0)
                for c in self.comparisons)
            scored["match_weight"] = weight
            scored["match_probability"] = _probability(weight)
        return list(pairs(records, self.model))


def _probability(weight: float) -> float:
    if weight > 1000:
        return 1.0
    odds = math.pow(2.0, weight)
    return odds / (1 + odds)


def _row_columns() -> list[str]:
    return list(patient_row({"id": "-"}).keys())


def _schema(tf_columns: list[str]) -> Any:
    import pyarrow as pa

    fields = []
    for column in _row_columns():
        kind = pa.list_(pa.string()) if column.endswith("_phonetic") else pa.string()
        fields.append(pa.field(column, kind))
    fields += [pa.field(f"tf_{t}", pa.float64()) for t in tf_columns]
    return pa.schema(fields)


_scorers: dict[str, Scorer] = {}
_scorers_lock = threading.Lock()


def scorer_for(model: dict[str, Any], version: str, *, trained: bool = True) -> Scorer:
    """The compiled scorer of a model version (compiled once per process)."""
    with _scorers_lock:
        scorer = _scorers.get(version)
        if scorer is None:
            scorer = Scorer(model, trained=trained)
            _scorers.clear()
            _scorers[version] = scorer
        return scorer


def stored_scorer(txn: Txn) -> Scorer:
    """The scorer of the store's trained model; before the first batch run, splink's
    untrained defaults, whose matches are never more than *possible* (``match``)."""
    from chartkeeper.mpi.service import MODEL_ID, load_model

    model = load_model(txn)
    if model is None:
        return scorer_for(settings().get_settings("duckdb").as_dict(), "untrained",
                          trained=False)
    library = txn.read("Library", MODEL_ID)
    return scorer_for(model, library["meta"]["versionId"])


# ------------------------------------------------------------------------------ candidates
def birth_date_variants(born: str) -> list[str]:
    """The birth date as keyed, and the dates its commonest entry errors would give: two
    neighbouring digits swapped (1927/1972, 03-12/03-21), day and month swapped, a day off."""
    import datetime as dt

    try:
        day = dt.date.fromisoformat(born)
    except ValueError:
        return []
    digits = born.replace("-", "")
    found = {born}
    for i in range(len(digits) - 1):
        swapped = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        found.add(f"{swapped[:4]}-{swapped[4:6]}-{swapped[6:]}")
    found.add(f"{digits[:4]}-{digits[6:]}-{digits[4:6]}")
    found.update((day + dt.timedelta(days=d)).isoformat() for d in (-1, 1))
    valid = []
    for text in sorted(found):
        try:
            if dt.date.fromisoformat(text) <= dt.date.today():
                valid.append(text)
        except ValueError:
            continue
    return valid


def _lookups(patient: Resource, row: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """The index lookups that find a record's candidates: each is one selective index probe
    (an identifier, a phone, a birth date or one of its likely mistypings), cheap at any
    size. Names alone are not: at a million patients a common surname is thousands of rows
    (the batch run, which compares names with everything else, catches what this misses)."""
    lookups: list[list[tuple[str, str]]] = []
    for ident in patient.get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("value"):
            system = ident.get("system")
            lookups.append([("identifier", f"{system}|{ident['value']}" if system
                             else str(ident["value"]))])
    if row["ssn"] and not any(i.get("system") == SSN_SYSTEM
                              for i in patient.get("identifier", []) or []):
        lookups.append([("identifier", f"{SSN_SYSTEM}|{row['ssn']}")])
    if row["phone"]:
        phone = next(t["value"] for t in patient.get("telecom", [])
                     if t.get("system") == "phone")
        lookups.append([("phone", str(phone))])
    if row["dob"]:
        lookups += [[("birthdate", born)] for born in birth_date_variants(row["dob"])]
    return lookups


def candidates(txn: Txn, patient: Resource) -> list[Resource]:
    """Stored Patients that share something specific with ``patient``: each index lookup's
    first ``PER_BLOCK``; records merged into another are left out."""
    row = patient_row({**patient, "id": patient.get("id") or "-"})
    found: dict[str, Resource] = {}
    for params in _lookups(patient, row):
        page = txn.search_params("Patient", [*params, ("_count", str(PER_BLOCK)),
                                             ("_total", "none")])
        for match in page.matches:
            if match["id"] != patient.get("id") and not any(
                    lk.get("type") == "replaced-by" for lk in match.get("link", [])):
                found.setdefault(match["id"], match)
    return list(found.values())


_totals: dict[int, tuple[float, int]] = {}
# How many patients share a name (the term frequencies), counted at most every ten minutes.
_counts: dict[tuple[int, str, str], tuple[float, int]] = {}


def _patient_total(txn: Txn) -> int:
    """How many Patients the store holds (re-counted at most once a minute)."""
    key = id(txn.store)
    cached = _totals.get(key)
    if cached is None or time.monotonic() - cached[0] > 60:
        page = txn.search_params("Patient", [("_count", "0"), ("_total", "accurate")])
        cached = _totals[key] = (time.monotonic(), int(page.total or 0))
    return max(cached[1], 1)


def frequencies(txn: Txn, row: dict[str, Any], columns: Iterable[str]
                ) -> dict[str, dict[str, float]]:
    """For each term-frequency column of the model, the share of patients with the record's
    value (a rarer name agreeing weighs more).

    Names are counted by the string index's prefix match (names that begin with the name
    count too): ``:exact`` is case-sensitive and scans, 70 ms against 1 ms at 20,000
    patients. The overcount can only lower a rare name's weight, never raise it."""
    total = _patient_total(txn)
    out: dict[str, dict[str, float]] = {}
    for column in columns:
        param, value = TF_PARAMS.get(column), row.get(column)
        if param is None or not value or not isinstance(value, str):
            continue
        key = (id(txn.store), param, value)
        cached = _counts.get(key)
        if cached is None or time.monotonic() - cached[0] > 600:
            page = txn.search_params("Patient", [(param, value), ("_count", "0"),
                                                 ("_total", "accurate")])
            cached = _counts[key] = (time.monotonic(), max(int(page.total or 0), 1))
            if len(_counts) > 100_000:
                _counts.clear()
        out[column] = {value: min(cached[1] / total, 1.0)}
    return out


# ------------------------------------------------------------------------------- $match
@dataclass(frozen=True)
class Match:
    patient: Resource
    pair: Pair
    grade: str  # certain | probable | possible (FHIR match-grade)


def grade(probability: float, thresholds: Thresholds) -> str:
    if probability >= thresholds.auto_link:
        return "certain"
    if probability >= thresholds.review:
        return "probable"
    return "possible"


def match(txn: Txn, patient: Resource, *, count: int = 10, only_certain: bool = False,
          thresholds: Thresholds | None = None, minimum: float = 0.01) -> list[Match]:
    """The stored Patients most likely to be ``patient``, best first: certain (at or above
    the automatic-link threshold), probable (the review band) and possible (from
    ``minimum``; every match before a model was trained)."""
    thresholds = thresholds or Thresholds()
    found = candidates(txn, patient)
    if not found:
        return []
    row = patient_row({**patient, "id": patient.get("id") or "-"})
    by_id = {p["id"]: p for p in found}
    scorer = stored_scorer(txn)
    scored = scorer.score(row, [patient_row(p) for p in found],
                          frequencies(txn, row, scorer.tf_columns))
    matches = []
    for pair in scored:
        other = pair.right if pair.left == row["unique_id"] else pair.left
        if other not in by_id or pair.probability < minimum:
            continue
        # Untrained, the probabilities are splink's guesses: never grounds for a link.
        level = grade(pair.probability, thresholds) if scorer.trained else "possible"
        if only_certain and level != "certain":
            continue
        matches.append(Match(by_id[other], pair, level))
    matches.sort(key=lambda m: (-m.pair.weight, m.patient["id"]))
    return matches[:count]


def match_bundle(matches: Iterable[Match], base_url: str) -> Resource:
    """The $match answer: a searchset Bundle, each entry with its score and match grade."""
    entries = [{
        "fullUrl": f"{base_url}/Patient/{m.patient['id']}", "resource": m.patient,
        "search": {"mode": "match", "score": round(m.pair.probability, 6),
                   "extension": [{"url": GRADE_EXTENSION, "valueCode": m.grade}]}}
        for m in matches]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
            "entry": entries}


def match_parameters(body: Any) -> tuple[Resource, int, bool]:
    """The $match input Parameters: (the Patient, count, onlyCertainMatches)."""
    from chartkeeper.store.errors import InvalidRequest
    from chartkeeper.store.service import validate_for_store

    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidRequest("Patient/$match takes a Parameters resource")
    patient: Resource | None = None
    count, only_certain = 10, False
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name == "resource":
            resource = parameter.get("resource")
            if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
                raise InvalidRequest("the 'resource' parameter must be a Patient")
            patient = resource
        elif name == "count":
            value = parameter.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                raise InvalidRequest("'count' must be a valueInteger from 1 to 100")
            count = value
        elif name == "onlyCertainMatches":
            value = parameter.get("valueBoolean")
            if not isinstance(value, bool):
                raise InvalidRequest("'onlyCertainMatches' must be a valueBoolean")
            only_certain = value
        else:
            raise InvalidRequest(f"Patient/$match has no parameter {str(name)[:60]!r}")
    if patient is None:
        raise InvalidRequest("Patient/$match needs the 'resource' parameter: the Patient to "
                             "match")
    checked = validate_for_store({**patient, "id": patient.get("id") or "match-input"},
                                 "Patient")
    if not any(patient_row(checked)[c] for c in ("first_name", "surname", "dob", "ssn",
                                                 "phone")) and not patient.get("identifier"):
        raise InvalidRequest("the Patient to match has no name, birth date, identifier or "
                             "phone: there is nothing to match on")
    return patient, count, only_certain
