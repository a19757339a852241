"""Parse C-CDA R2.1 documents safely and map them to FHIR R4 (header, patient, sections).

The XML goes through ``defusedxml`` (no DTDs, no entities, no external references, no
network); anything that is not a CDA ``ClinicalDocument`` with a recordTarget patient is
refused with a ``CcdaError``. Sections are recognised by templateId (``SECTION_MAPPERS``); the
entry mappers are in ``ccda_map`` and ``ccda_sections``. Nothing here touches the database.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from chartkeeper.ingest.ccda_map import (
    ALLERGIES,
    ENCOUNTERS,
    IMMUNIZATIONS,
    MEDICATIONS,
    NS,
    PROBLEMS,
    PROCEDURES,
    RESULTS,
    VITAL_SIGNS,
    Entry,
    Resource,
    concept,
    identifier,
    map_allergies,
    map_encounters,
    map_immunizations,
    map_medications,
    map_problems,
    map_procedures,
    map_results,
    map_vital_signs,
    q,
    template_ids,
    text_of,
    timestamp,
)

# CcdaError is defined with the mappers (an entry can be refused); this is its public home.
from chartkeeper.ingest.ccda_map import CcdaError as CcdaError
from chartkeeper.ingest.ccda_sections import (
    PLAN_OF_TREATMENT,
    SOCIAL_HISTORY,
    map_plan_of_treatment,
    map_social_history,
)

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
CDA_FORMAT = {"system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
              "code": "urn:hl7-org:sdwg:ccda-structuredBody:2.1"}
# Where the DocumentReference keeps the document's SHA-256 (FHIR R4's attachment.hash is
# SHA-1): an identifier with this system and the lowercase hex digest as its value.
SHA256_SYSTEM = "urn:chartkeeper:sha256"


SectionMapper = Callable[[Element, Resource], list[Entry]]

# template root → (section name, mapper), in document order of a CCD.
SECTION_MAPPERS: dict[str, tuple[str, SectionMapper]] = {
    PROBLEMS: ("problems", map_problems),
    MEDICATIONS: ("medications", map_medications),
    ALLERGIES: ("allergies", map_allergies),
    RESULTS: ("results", map_results),
    VITAL_SIGNS: ("vital-signs", map_vital_signs),
    PROCEDURES: ("procedures", map_procedures),
    IMMUNIZATIONS: ("immunizations", map_immunizations),
    ENCOUNTERS: ("encounters", map_encounters),
    SOCIAL_HISTORY: ("social-history", map_social_history),
    PLAN_OF_TREATMENT: ("plan-of-treatment", map_plan_of_treatment),
}


def section_mapper(section: Element) -> tuple[str, SectionMapper] | None:
    """The mapper for a section by its templateId (entries-required or -optional root)."""
    for root in template_ids(section):
        found = SECTION_MAPPERS.get(root) or SECTION_MAPPERS.get(root + ".1")
        if found:
            return found
    return None


@dataclass
class CcdaDocument:
    """A parsed, mapped document: what the storing service writes in one transaction."""

    raw: bytes
    sha256: str
    sha1_b64: str
    document_id: Resource  # Identifier (system urn:oid:<root>, value extension)
    document_type: Resource
    title: str
    date: str | None
    author: str
    patient: Resource
    patient_identifier: Resource
    entries: list[Entry] = field(default_factory=list)
    sections: list[tuple[str, Resource | None, list[Entry]]] = field(default_factory=list)

    @property
    def document_key(self) -> tuple[str, str]:
        return self.document_id["system"], self.document_id["value"]


def parse_xml(raw: bytes) -> Element:
    """The document element of ``raw``, parsed with DTDs, entities and external references
    forbidden. Raises ``CcdaError`` for unsafe, malformed or non-CDA input."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CcdaError(f"document is {len(raw)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    if not raw.strip():
        raise CcdaError("document is empty; expected a C-CDA ClinicalDocument (XML)")
    try:
        root: Element = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True,
                                          forbid_external=True)
    except DefusedXmlException as exc:
        raise CcdaError(f"unsafe XML refused ({type(exc).__name__}: {exc}); C-CDA documents "
                        "must not carry a DTD, entity declarations or external references"
                        ) from exc
    except ParseError as exc:
        raise CcdaError(f"not well-formed XML: {exc}") from exc
    if root.tag != q("ClinicalDocument"):
        raise CcdaError(f"document element is {root.tag!r}; expected ClinicalDocument in the "
                        "urn:hl7-org:v3 namespace")
    return root


def parse(raw: bytes) -> CcdaDocument:
    """Parse and map one C-CDA document; raises ``CcdaError`` for one we refuse."""
    root = parse_xml(raw)
    doc_ii = root.find("h:id", NS)
    doc_id = identifier(doc_ii) if doc_ii is not None else None
    if doc_id is None:
        raise CcdaError("ClinicalDocument has no id with a root; expected <id root=...>")
    patient, patient_identifier = map_patient(root)
    subject = {"reference": "urn:uuid:patient"}
    document = CcdaDocument(
        raw=raw,
        sha256=hashlib.sha256(raw).hexdigest(),
        sha1_b64=base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii"),
        document_id=doc_id,
        document_type=concept(root.find("h:code", NS)) or {"text": "clinical document"},
        title=text_of(root.find("h:title", NS)) or "Clinical document",
        date=timestamp(_value(root, "h:effectiveTime")),
        author=_author(root),
        patient=patient,
        patient_identifier=patient_identifier,
    )
    for section in root.iterfind(".//h:structuredBody//h:section", NS):
        found = section_mapper(section)
        if found is None:
            continue
        name, mapper = found
        entries = mapper(section, subject)
        document.entries += entries
        document.sections.append((text_of(section.find("h:title", NS)) or name,
                                  concept(section.find("h:code", NS)), entries))
    return document


def _value(element: Element, path: str) -> str | None:
    found = element.find(path, NS)
    return found.get("value") if found is not None else None


def _author(root: Element) -> str:
    author = root.find("h:author/h:assignedAuthor", NS)
    if author is None:
        return "unknown author"
    for path in ("h:assignedPerson/h:name", "h:representedOrganization/h:name",
                 "h:assignedAuthoringDevice/h:softwareName"):
        name = text_of(author.find(path, NS))
        if name:
            return name
    return "unknown author"


_GENDER = {"M": "male", "F": "female", "UN": "other", "UNK": "unknown"}
_TELECOM = {"tel": "phone", "mailto": "email", "fax": "fax", "http": "url", "https": "url"}
_USE = {"HP": "home", "H": "home", "WP": "work", "MC": "mobile", "TMP": "temp", "OLD": "old"}


def map_patient(root: Element) -> tuple[Resource, Resource]:
    """recordTarget/patientRole → Patient, with the identifier to match it on."""
    role = root.find("h:recordTarget/h:patientRole", NS)
    if role is None or role.find("h:patient", NS) is None:
        raise CcdaError("ClinicalDocument has no recordTarget/patientRole/patient; "
                        "a document we import must name its patient")
    ids = [i for ii in role.findall("h:id", NS) if (i := identifier(ii))]
    if not ids:
        raise CcdaError("recordTarget/patientRole has no id with a root; the patient must "
                        "carry an identifier to be matched")
    person = role.find("h:patient", NS)
    assert person is not None
    patient: Resource = {"resourceType": "Patient", "identifier": ids}
    names = [n for name in person.findall("h:name", NS) if (n := _name(name))]
    if names:
        patient["name"] = names
    telecoms = [t for tel in role.findall("h:telecom", NS) if (t := _telecom(tel))]
    if telecoms:
        patient["telecom"] = telecoms
    gender_code = person.find("h:administrativeGenderCode", NS)
    gender = _GENDER.get(gender_code.get("code", "") if gender_code is not None else "")
    if gender:
        patient["gender"] = gender
    birth = timestamp(_value(person, "h:birthTime"))
    if birth:
        patient["birthDate"] = birth[:10]
    deceased = person.find("sdtc:deceasedInd", NS)
    if deceased is not None and deceased.get("value") in ("true", "false"):
        patient["deceasedBoolean"] = deceased.get("value") == "true"
    addresses = [a for addr in role.findall("h:addr", NS) if (a := _address(addr))]
    if addresses:
        patient["address"] = addresses
    language = person.find("h:languageCommunication/h:languageCode", NS)
    if language is not None and language.get("code"):
        patient["communication"] = [{"language": {"coding": [{
            "system": "urn:ietf:bcp:47", "code": language.get("code")}]}}]
    return patient, ids[0]


def _name(name: Element) -> Resource | None:
    given = [g for e in name.findall("h:given", NS) for g in text_of(e).split() if g]
    result: Resource = {}
    family = text_of(name.find("h:family", NS))
    if family:
        result["family"] = family
    if given:
        result["given"] = given
    for part, key in (("h:prefix", "prefix"), ("h:suffix", "suffix")):
        values = [text_of(e) for e in name.findall(part, NS) if text_of(e)]
        if values:
            result[key] = values
    if not result and text_of(name):
        result["text"] = text_of(name)
    use = _USE.get(name.get("use", ""))
    if result and name.get("use") == "L":
        result["use"] = "official"
    elif result and use in ("temp", "old"):
        result["use"] = use
    return result or None


def _telecom(tel: Element) -> Resource | None:
    value = tel.get("value", "")
    scheme, _, rest = value.partition(":")
    if not rest or tel.get("nullFlavor"):
        return None
    result: Resource = {"system": _TELECOM.get(scheme.lower(), "other"),
                        "value": value if scheme.startswith("http") else rest}
    use = _USE.get(tel.get("use", ""))
    if use in ("home", "work", "mobile", "temp", "old"):
        result["use"] = use
    return result


def _address(addr: Element) -> Resource | None:
    if addr.get("nullFlavor"):
        return None
    result: Resource = {}
    lines = [text_of(e) for e in addr.findall("h:streetAddressLine", NS) if text_of(e)]
    if lines:
        result["line"] = lines
    for tag, key in (("city", "city"), ("state", "state"), ("postalCode", "postalCode"),
                     ("country", "country")):
        value = text_of(addr.find(f"h:{tag}", NS))
        if value:
            result[key] = value
    use = _USE.get(addr.get("use", ""))
    if result and use in ("home", "work", "temp", "old"):
        result["use"] = use
    return result or None
