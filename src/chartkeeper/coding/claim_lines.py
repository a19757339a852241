"""The charges of an 837 and each claim type's part of it: the encounter's ChargeItems as
revenue lines (837I) or as the prices of the coded service lines (837P), the totals, and the
institutional and professional claims' fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal, InvalidOperation
from typing import Any

from chartkeeper import x12
from chartkeeper.coding import edits, grouper
from chartkeeper.coding.claim_parties import clinician
from chartkeeper.coding.claim_record import Record, Resource, StayError, age_on, code_of, day_of
from chartkeeper.coding.claim_stay import (
    MS_DRG_SYSTEM,
    claim_procedures,
    discharge_status,
    principal_entry,
    stay_dates,
)
from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import ServiceLine
from chartkeeper.coding.worksheet import PROCEDURE_SYSTEMS
from chartkeeper.store.service import Txn, search_all

REVENUE_SYSTEM = "https://www.nubc.org/CodeSystem/RevenueCodes"
POINT_OF_ORIGIN_SYSTEM = "https://www.nubc.org/CodeSystem/PointOfOrigin"
ADMISSION_TYPE_SYSTEM = "https://www.nubc.org/CodeSystem/PriorityTypeOfAdmitOrVisit"
ACT_PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActPriority"
ADMIT_SOURCE_SYSTEM = "http://terminology.hl7.org/CodeSystem/admit-source"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CHARGEABLE = frozenset({"billable", "billed"})
#: Admission source (FHIR admit-source) as the NUBC point of origin (CL102). Since July 2010
#: the emergency department is no point of origin (code 7 was retired): where the patient came
#: from before it is not recorded, so "information not available" (9).
POINT_OF_ORIGIN_OF: Mapping[str, str] = {
    "hosp-trans": "4", "emd": "9", "outp": "2", "born": "5", "gp": "2", "mp": "2",
    "nursing": "5", "psych": "6", "rehab": "6", "other": "9",
}
#: Encounter.priority (v3-ActPriority) as the UB-04 type of admission (CL101).
ADMISSION_TYPE_OF: Mapping[str, str] = {"EM": "1", "UR": "2", "A": "2", "EL": "3", "R": "3"}
#: Encounter.class as the 837P place of service.
PLACE_OF_SERVICE_OF: Mapping[str, str] = {
    "AMB": "11", "EMER": "23", "OBSENC": "22", "HH": "12", "VR": "02", "SS": "24",
}
_ACCOMMODATION = re.compile(r"01[0-9]{2}|02[01][0-9]")  # room & board revenue codes 0100-0219


def _clock(value: object) -> time | None:
    """The time of day a FHIR dateTime names, as written (no time-zone shift)."""
    text = str(value)
    if len(text) < 16 or text[10] != "T":
        return None
    try:
        return time(int(text[11:13]), int(text[14:16]))
    except ValueError:
        return None


def _money(value: object, where: str, gaps: list[str]) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        gaps.append(f"{where}: {value!r} is not an amount")
        return None
    return amount


@dataclass
class Built:
    """One claim type's part of the X12 claim, and what the release records of it."""

    fields: dict[str, Any]
    coded: edits.CodedClaim | None
    items: list[Resource]
    total: Decimal
    warnings: list[str] = field(default_factory=list)


def _charges(txn: Txn, record: Record) -> list[Resource]:
    return sorted((c for c in search_all(txn, "ChargeItem", [
        ("context", f"Encounter/{record.encounter['id']}")]) if c.get("status") in CHARGEABLE),
        key=lambda c: str(c["id"]))


def _charge_day(charge: Resource) -> date | None:
    moment = charge.get("occurrenceDateTime") or (charge.get("occurrencePeriod") or {}).get(
        "start")
    return day_of(moment) if moment else None


def _units(value: object, where: str, gaps: list[str]) -> Decimal:
    units = _money(1 if value is None else value, f"{where} quantity", gaps)
    return units if units is not None else Decimal(1)


def institutional_part(txn: Txn, record: Record, birth: date | None, sex: str,
                       diagnoses: list[tuple[str, str | None]]) -> Built:
    encounter = record.encounter
    admitted, discharged = stay_dates(record)
    status: str | None = None
    try:
        status = discharge_status(encounter)
    except StayError as problem:
        record.gaps.append(str(problem))
    procedures = claim_procedures(record)
    coded = None
    if birth is not None and admitted is not None and discharged is not None and status:
        coded = _coded(record, "inpatient", age_on(birth, admitted), sex, diagnoses,
                       admitted=admitted, discharged=discharged, discharge_status=status,
                       procedures=tuple(edits.ClaimProcedure(code, performed)
                                        for code, performed in procedures))
    attending = clinician(txn, record, ("ATND",), "attending physician")
    package = code_of(principal_entry(record.claim).get("packageCode"), MS_DRG_SYSTEM)
    if package is None:
        record.gaps.append(f"{record.where} has no MS-DRG recorded: group the stay first "
                           "(`chartkeeper claims drg ENCOUNTER`)")
    elif coded is not None and not record.gaps:
        _check_drg(record, coded, package)
    lines, items, total = _revenue_lines(txn, record, admitted, discharged)
    if record.gaps or admitted is None or discharged is None or status is None:
        return Built({}, coded, items, total)
    hospitalization = encounter.get("hospitalization") or {}
    admit_source = code_of(hospitalization.get("admitSource"), ADMIT_SOURCE_SYSTEM) or "other"
    origin = code_of(hospitalization.get("admitSource"), POINT_OF_ORIGIN_SYSTEM) or \
        POINT_OF_ORIGIN_OF.get(admit_source, "9")
    admission_type = code_of(encounter.get("priority"), ADMISSION_TYPE_SYSTEM) or \
        ADMISSION_TYPE_OF.get(code_of(encounter.get("priority"), ACT_PRIORITY_SYSTEM) or "") or \
        {"born": "4", "emd": "1"}.get(admit_source, "9")
    period = encounter.get("period") or {}
    pcs = [x12.Procedure(code, performed) for code, performed in procedures
           if performed is not None]
    return Built(dict(
        facility_code="11", statement_from=admitted, statement_to=discharged,
        admission_type=admission_type, discharge_status=status,
        principal_diagnosis=x12.Diagnosis(diagnoses[0][0].replace(".", ""), diagnoses[0][1]),
        other_diagnoses=tuple(x12.Diagnosis(code.replace(".", ""), poa)
                              for code, poa in diagnoses[1:]),
        lines=lines, admission_source=origin, admission_date=admitted,
        admission_hour=_clock(period.get("start")), discharge_hour=_clock(period.get("end")),
        principal_procedure=pcs[0] if pcs else None, other_procedures=tuple(pcs[1:]),
        attending_provider=attending, drg=package), coded, items, total)


def _check_drg(record: Record, coded: edits.CodedClaim, package: str) -> None:
    """The recorded MS-DRG must be what the stay groups to now, under the version recorded."""
    coding = next(c for c in principal_entry(record.claim)["packageCode"]["coding"]
                  if c.get("system") == MS_DRG_SYSTEM)
    recorded = str(coding.get("version") or "")
    version = int(recorded.replace(".", "")) if re.fullmatch(r"\d\d\.\d", recorded) else None
    assert coded.admitted is not None and coded.discharged is not None
    assert coded.discharge_status is not None
    try:
        principal, *secondary = (grouper.Diagnosis(d.code, d.poa or "") for d in coded.diagnoses)
        now = grouper.group(grouper.Stay(
            coded.age, coded.sex, coded.discharge_status, coded.admitted, coded.discharged,
            principal, tuple(secondary),
            tuple(grouper.Procedure(p.code, p.performed) for p in coded.procedures)), version)
    except CodeSetError as problem:
        record.gaps.append(f"{record.where}: the stay cannot be grouped to check its MS-DRG "
                           f"{package}: {problem}")
        return
    if f"{now.drg:03d}" != package:
        record.gaps.append(f"{record.where} records MS-DRG {package}, but the stay groups to "
                           f"{now.drg:03d} ({now.title}) now: group it again")


@dataclass(frozen=True)
class _Line:
    """A priced ChargeItem: revenue code, date, HCPCS/CPT (system, code), amount, units."""

    revenue: str
    day: date | None
    service: tuple[str, str] | None
    amount: Decimal
    units: Decimal

    @property
    def accommodation(self) -> bool:
        return bool(_ACCOMMODATION.fullmatch(self.revenue))


def _service_coding(concept: Resource | None) -> tuple[str, str] | None:
    """(system, code) of the CPT or HCPCS coding of a concept."""
    for system in (PROCEDURE_SYSTEMS["cpt"], PROCEDURE_SYSTEMS["hcpcs"]):
        code = code_of(concept, system)
        if code is not None:
            return system, code
    return None


def _price(record: Record, charge: Resource) -> Decimal | None:
    """ChargeItem.priceOverride: the charge's amount (R4's total price of the item)."""
    where = f"ChargeItem/{charge['id']}"
    price = (charge.get("priceOverride") or {}).get("value")
    if price is None:
        record.gaps.append(f"{where} has no priceOverride: it is not priced")
        return None
    return _money(price, f"{where} priceOverride", record.gaps)


def _revenue_lines(txn: Txn, record: Record, admitted: date | None, discharged: date | None
                   ) -> tuple[tuple[x12.InstitutionalServiceLine, ...], list[Resource], Decimal]:
    """837I lines from the stay's ChargeItems in revenue code order (room & board first); the
    accommodation days (revenue codes 0100-0219) must add up to the days of the stay."""
    found = []
    for charge in _charges(txn, record):
        revenue = code_of(charge.get("code"), REVENUE_SYSTEM)
        if revenue is None:
            record.gaps.append(f"ChargeItem/{charge['id']} has no revenue code "
                               f"({REVENUE_SYSTEM}): an 837I line needs one")
            continue
        amount = _price(record, charge)
        units = _units((charge.get("quantity") or {}).get("value"),
                       f"ChargeItem/{charge['id']}", record.gaps)
        if amount is not None:
            found.append(_Line(revenue, _charge_day(charge), _service_coding(charge.get("code")),
                               amount, units))
    if not found:
        record.gaps.append(f"Encounter/{record.encounter['id']} has no billable ChargeItem: "
                           "an 837I needs its room & board and other charges")
    found.sort(key=lambda line: (line.revenue, line.day or date.min))
    if admitted is not None and discharged is not None and found:
        days = max(1, (discharged - admitted).days)  # the discharge day is not a day billed
        billed = sum((line.units for line in found if line.accommodation), Decimal(0))
        if billed != days:
            record.gaps.append(f"room & board (revenue codes 0100-0219) bills {billed} days; "
                               f"the stay {admitted}..{discharged} is {days} days")
    lines = tuple(x12.InstitutionalServiceLine(
        line.revenue, line.amount, line.units, line.day,
        line.service[1] if line.service else None,
        unit_basis="DA" if line.accommodation else "UN") for line in found)
    items = []
    for number, line in enumerate(found, start=1):
        product = {"system": line.service[0], "code": line.service[1]} if line.service else {
            "system": DATA_ABSENT, "code": "not-applicable", "display": "Not Applicable"}
        item: Resource = {
            "sequence": number, "revenue": {"coding": [{"system": REVENUE_SYSTEM,
                                                        "code": line.revenue}]},
            "productOrService": {"coding": [product]}, "quantity": {"value": _number(line.units)},
            "net": usd(line.amount),
            "encounter": [{"reference": f"Encounter/{record.encounter['id']}"}]}
        if line.day is not None:
            item["servicedDate"] = line.day.isoformat()
        items.append(item)
    return lines, items, _total(record, [line.amount for line in found])


def _total(record: Record, amounts: Sequence[Decimal]) -> Decimal:
    """Claim.total when billing recorded one (the release gate checks it against the lines),
    else the sum of the lines."""
    recorded = (record.claim.get("total") or {}).get("value")
    if recorded is not None:
        amount = _money(recorded, f"{record.where} total", record.gaps)
        if amount is not None:
            return amount
    return sum(amounts, Decimal(0))


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def usd(amount: Decimal) -> Resource:
    return {"value": _number(amount), "currency": "USD"}


def professional_part(txn: Txn, record: Record, birth: date | None, sex: str,
                      diagnoses: list[tuple[str, str | None]]) -> Built:
    encounter = record.encounter
    period = encounter.get("period") or {}
    service_day = day_of(period.get("end") or period.get("start"))
    if service_day is None:
        record.gaps.append(f"Encounter/{encounter['id']} has no date of service")
    rendering = clinician(txn, record, ("PPRF", "ATND"), "rendering provider")
    klass = str((encounter.get("class") or {}).get("code") or "")
    place = PLACE_OF_SERVICE_OF.get(klass)
    if place is None:
        record.gaps.append(f"Encounter/{encounter['id']} class {klass!r} has no place of "
                           f"service ({', '.join(PLACE_OF_SERVICE_OF)} do)")
    positions = {entry.get("sequence"): number for number, entry in enumerate(
        sorted(record.claim.get("diagnosis") or [], key=lambda d: d.get("sequence", 0)),
        start=1)}
    prices = _prices(txn, record)
    lines, items, amounts, coded_lines = [], [], [], []
    for item in sorted(record.claim.get("item") or [], key=lambda i: i.get("sequence", 0)):
        where = f"{record.where} item {item.get('sequence')}"
        service = _service_coding(item.get("productOrService"))
        if service is None:
            record.gaps.append(f"{where} has no CPT or HCPCS code")
            continue
        code = service[1]
        units = _units((item.get("quantity") or {}).get("value"), where, record.gaps)
        day = day_of(item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start")
                     ) or service_day
        modifiers = tuple(str(c.get("code")) for m in item.get("modifier") or []
                          for c in (m.get("coding") or [])[:1])
        try:
            coded_lines.append(ServiceLine(code, modifiers, int(units), day))
        except CodeSetError as problem:
            record.gaps.append(f"{where}: {problem}")
        amount = prices.pop(service, None)
        if amount is None:
            record.gaps.append(f"{where} ({code}) has no charge: record a priced ChargeItem "
                               "with this code on the encounter")
            continue
        pointers = tuple(positions.get(sequence, 0)
                         for sequence in item.get("diagnosisSequence") or [])
        if day is not None:
            lines.append(x12.ProfessionalServiceLine(code, amount, units, day, pointers,
                                                     modifiers))
        amounts.append(amount)
        items.append({**item, "net": usd(amount)})
    warnings = [f"ChargeItem code {code} ({system}) is on the encounter but not coded on the "
                "Claim: it is not billed" for system, code in sorted(prices)]
    coded = None
    if birth is not None and service_day is not None:
        coded = _coded(record, "outpatient", age_on(birth, service_day), sex, diagnoses,
                       service_date=service_day, lines=tuple(coded_lines))
    total = _total(record, amounts)
    if record.gaps or place is None:
        return Built({}, coded, items, total, warnings)
    return Built(dict(
        place_of_service=place,
        diagnoses=tuple(x12.Diagnosis(code.replace(".", "")) for code, _ in diagnoses),
        lines=tuple(lines), rendering_provider=rendering), coded, items, total, warnings)


def _prices(txn: Txn, record: Record) -> dict[tuple[str, str], Decimal]:
    """The charges on the encounter by CPT/HCPCS (system, code); several of one are added."""
    prices: dict[tuple[str, str], Decimal] = {}
    for charge in _charges(txn, record):
        amount = _price(record, charge)
        service = _service_coding(charge.get("code"))
        if service is not None and amount is not None:
            prices[service] = prices.get(service, Decimal(0)) + amount
    return prices


def _coded(record: Record, setting: edits.Setting, age: int, sex: str,
           diagnoses: list[tuple[str, str | None]], **stay: Any) -> edits.CodedClaim | None:
    try:
        return edits.CodedClaim(
            setting=setting, age=age, sex=sex,
            diagnoses=tuple(edits.ClaimDiagnosis(code, poa) for code, poa in diagnoses),
            **stay)
    except edits.ClaimError as problem:
        record.gaps.append(f"{record.where}: {problem}")
        return None
