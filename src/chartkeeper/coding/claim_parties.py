"""The parties to an 837, read from the store: the billing provider, the payer, the focal
coverage and its subscriber (and the patient when another person holds the coverage), and the
clinicians (attending, rendering).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date

from chartkeeper import x12
from chartkeeper.coding.claim_record import (
    Record,
    Resource,
    code_of,
    day_of,
    identifier_of,
    read_resource,
    target_of,
)
from chartkeeper.store.service import Txn
from chartkeeper.x12.claim import PayerResponsibility, Sex

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
EIN_SYSTEM = "urn:oid:2.16.840.1.113883.4.4"
TAXONOMY_SYSTEM = "http://nucc.org/provider-taxonomy"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RELATIONSHIP_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscriber-relationship"
SOPT_SYSTEM = "urn:oid:2.16.840.1.113883.3.221.5"  # PHDSC Source of Payment Typology
IDENTIFIER_TYPES = "http://terminology.hl7.org/CodeSystem/v2-0203"
CARIN_IDENTIFIER_TYPES = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType"
#: Coverage.relationship as PAT01 (the patient's relationship to the subscriber).
PATIENT_RELATIONSHIP_OF: Mapping[str, str] = {
    "spouse": "01", "child": "19", "common": "53", "parent": "G8", "other": "G8",
    "injured": "G8",
}
_SEX_OF: Mapping[str, Sex] = {"male": "M", "female": "F"}
_RESPONSIBILITY: Mapping[int, PayerResponsibility] = {1: "P", 2: "S"}


def _typed_identifier(resource: Resource, types: Sequence[tuple[str, str]]) -> str | None:
    for identifier in resource.get("identifier") or []:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if (coding.get("system"), coding.get("code")) in types and identifier.get("value"):
                return str(identifier["value"])
    return None


def _x12_text(value: str) -> str:
    """Upper case, accents dropped (X12's basic character set); other characters are left for
    the release gate to refuse by name."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip().upper()


def billing_provider(txn: Txn, record: Record) -> x12.BillingProvider | None:
    provider = record.claim.get("provider")
    target = target_of(provider, "Organization")
    if target is None:
        record.gaps.append(f"{record.where}: the provider is a placeholder "
                           f"({(provider or {}).get('display') or provider!r}), not an "
                           "Organization: record the Encounter's serviceProvider and code it "
                           "again")
        return None
    organization = read_resource(txn, *target, f"{record.where} provider")
    where = f"Organization/{target[1]}"
    npi = identifier_of(organization, NPI_SYSTEM)
    ein = identifier_of(organization, EIN_SYSTEM)
    if npi is None:
        record.gaps.append(f"{where} (billing provider) has no NPI (identifier {NPI_SYSTEM})")
    if ein is None:
        record.gaps.append(f"{where} (billing provider) has no EIN (identifier {EIN_SYSTEM})")
    if not organization.get("name"):
        record.gaps.append(f"{where} (billing provider) has no name")
    address = _address(organization.get("address") or [], ("billing", "work"), where,
                       "billing provider", record.gaps)
    taxonomy = next((code_of(kind, TAXONOMY_SYSTEM) for kind in organization.get("type") or []
                     if code_of(kind, TAXONOMY_SYSTEM)), None)
    if npi is None or ein is None or address is None or not organization.get("name"):
        return None
    return x12.BillingProvider(_x12_text(str(organization["name"])), npi, ein.replace("-", ""),
                               address, taxonomy)


def _address(addresses: list[Resource], preferred: Sequence[str], where: str, whose: str,
             gaps: list[str]) -> x12.Address | None:
    if not addresses:
        gaps.append(f"{where} ({whose}) has no address")
        return None
    chosen = next((a for use in preferred for a in addresses if a.get("use") == use),
                  addresses[0])
    lines = [str(line) for line in chosen.get("line") or [] if str(line).strip()]
    missing = [name for name, value in (("line", lines), ("city", chosen.get("city")),
                                        ("state", chosen.get("state")),
                                        ("postalCode", chosen.get("postalCode"))) if not value]
    if missing:
        gaps.append(f"{where} ({whose}) address lacks {', '.join(missing)}")
        return None
    return x12.Address(_x12_text(lines[0]), _x12_text(str(chosen["city"])),
                       _x12_text(str(chosen["state"])),
                       str(chosen["postalCode"]).replace("-", "").replace(" ", ""),
                       _x12_text(lines[1]) if len(lines) > 1 else None)


def focal_coverage(txn: Txn, record: Record) -> tuple[Resource, int] | None:
    """The focal Coverage and its sequence (1 primary, 2 secondary...)."""
    insurance = sorted(record.claim.get("insurance") or [],
                       key=lambda i: (not i.get("focal"), i.get("sequence", 0)))
    if not insurance:
        record.gaps.append(f"{record.where} has no insurance: no payer to bill")
        return None
    target = target_of(insurance[0].get("coverage"), "Coverage")
    if target is None:
        display = (insurance[0].get("coverage") or {}).get("display")
        record.gaps.append(f"{record.where} has no Coverage ({display or 'a placeholder'}): "
                           "no payer to bill; record the patient's coverage and code the "
                           "encounter again")
        return None
    coverage = read_resource(txn, *target, f"{record.where} insurance")
    if coverage.get("status") != "active":
        record.gaps.append(f"Coverage/{target[1]} is {coverage.get('status')}, not active")
    return coverage, int(insurance[0].get("sequence") or 1)


def insured(txn: Txn, record: Record, found: tuple[Resource, int] | None,
            birth: date | None, sex: str
            ) -> tuple[x12.Subscriber | None, x12.Patient | None, x12.Payer | None,
                       str | None]:
    if found is None:
        return None, None, None, None
    coverage, sequence = found
    where = f"Coverage/{coverage['id']}"
    payer, payer_ref = _payer(txn, record, coverage)
    member_id = coverage.get("subscriberId") or _typed_identifier(
        coverage, [(IDENTIFIER_TYPES, "MB")])
    if not member_id:
        record.gaps.append(f"{where} has no subscriberId (the member id the payer knows)")
    relationship = code_of(coverage.get("relationship"), RELATIONSHIP_SYSTEM) or "self"
    holder: Resource = record.patient
    if relationship != "self":
        target = target_of(coverage.get("subscriber"), "Patient", "RelatedPerson")
        if target is None:
            record.gaps.append(f"{where}: the beneficiary is the subscriber's {relationship}, "
                               "but the Coverage names no subscriber")
            return None, None, payer, payer_ref
        holder = read_resource(txn, *target, f"{where} subscriber")
    holder_where = f"{holder['resourceType']}/{holder['id']}"
    name = _name(holder, holder_where, record.gaps)
    address = _address(holder.get("address") or [], ("home",), holder_where, "subscriber",
                       record.gaps)
    holder_birth = birth if holder is record.patient else day_of(holder.get("birthDate"))
    if holder_birth is None and holder is not record.patient:
        record.gaps.append(f"{holder_where} (subscriber) has no birth date")
    if name is None or address is None or holder_birth is None or not member_id:
        return None, None, payer, payer_ref
    group = next((str(c.get("value")) for c in coverage.get("class") or []
                  if code_of(c.get("type"), "http://terminology.hl7.org/CodeSystem/"
                             "coverage-class") == "group" and c.get("value")), None)
    subscriber = x12.Subscriber(
        str(member_id), name[0], name[1], holder_birth,
        _SEX_OF.get(str(holder.get("gender")), "U"), address, group,
        _RESPONSIBILITY.get(sequence, "T"),
        _filing_indicator(coverage, record.institutional))
    patient = None
    if holder is not record.patient:
        own = _name(record.patient, f"Patient/{record.patient['id']}", record.gaps)
        own_address = _address(record.patient.get("address") or [], ("home",),
                               f"Patient/{record.patient['id']}", "patient", record.gaps)
        if own is None or own_address is None or birth is None:
            return None, None, payer, payer_ref
        patient = x12.Patient(PATIENT_RELATIONSHIP_OF.get(relationship, "G8"), own[0], own[1],
                              birth, _SEX_OF.get(sex, "U"), own_address)
    return subscriber, patient, payer, payer_ref


def _payer(txn: Txn, record: Record, coverage: Resource) -> tuple[x12.Payer | None, str | None]:
    where = f"Coverage/{coverage['id']}"
    payors = coverage.get("payor") or []
    target = target_of(payors[0] if payors else None, "Organization")
    if target is None:
        named = (payors[0] if payors else {}).get("reference") or "nobody"
        record.gaps.append(f"no payer: {where} is paid by {named} (self-pay or not an "
                           "Organization), so there is no one to send a claim to")
        return None, None
    organization = read_resource(txn, *target, f"{where} payor")
    payer_id = _typed_identifier(organization, [(IDENTIFIER_TYPES, "NIIP"),
                                                (CARIN_IDENTIFIER_TYPES, "payerid")])
    if payer_id is None:
        record.gaps.append(f"Organization/{target[1]} (payer {organization.get('name')!r}) has "
                           f"no payer id (an identifier of type {IDENTIFIER_TYPES}|NIIP)")
    if not organization.get("name"):
        record.gaps.append(f"Organization/{target[1]} (payer) has no name")
    if payer_id is None or not organization.get("name"):
        return None, f"Organization/{target[1]}"
    return (x12.Payer(_x12_text(str(organization["name"])), payer_id),
            f"Organization/{target[1]}")


def _filing_indicator(coverage: Resource, institutional: bool) -> str:
    """SBR09 from the Coverage type (Source of Payment Typology); ZZ when it says nothing."""
    code = code_of(coverage.get("type"), SOPT_SYSTEM) or ""
    if code.startswith("1"):
        return "MA" if institutional else "MB"
    if code.startswith("2"):
        return "MC"
    if code.startswith("31"):
        return "CH"
    if code.startswith("32"):
        return "VA"
    if code.startswith("6"):
        return "BL"
    if code.startswith("5"):
        return "CI"
    return "ZZ"


def _name(person: Resource, where: str, gaps: list[str]) -> tuple[str, str] | None:
    names = person.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    family, given = chosen.get("family"), (chosen.get("given") or [None])[0]
    if not family or not given:
        gaps.append(f"{where} has no family and given name")
        return None
    return _x12_text(str(family)), _x12_text(str(given))


def clinician(txn: Txn, record: Record, roles: Sequence[str], what: str
              ) -> x12.Provider | None:
    """The first Encounter participant in one of ``roles`` (v3-ParticipationType)."""
    encounter = record.encounter
    for role in roles:
        for participant in encounter.get("participant") or []:
            if not any(code_of(kind, PARTICIPATION_SYSTEM) == role
                       for kind in participant.get("type") or []):
                continue
            target = target_of(participant.get("individual"), "Practitioner")
            if target is None:
                continue
            practitioner = read_resource(txn, *target, f"Encounter/{encounter['id']} {what}")
            npi = identifier_of(practitioner, NPI_SYSTEM)
            name = _name(practitioner, f"Practitioner/{target[1]}", record.gaps)
            if npi is None:
                record.gaps.append(f"Practitioner/{target[1]} ({what}) has no NPI (identifier "
                                   f"{NPI_SYSTEM})")
            if npi is None or name is None:
                return None
            return x12.Provider(name[0], name[1], npi)
    record.gaps.append(f"Encounter/{encounter['id']} names no {what} (a participant of type "
                       f"{' or '.join(roles)} who is a Practitioner)")
    return None
