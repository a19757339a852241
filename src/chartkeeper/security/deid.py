"""HIPAA Safe Harbor de-identification (45 CFR 164.514(b)(2)) of FHIR R4 records and NDJSON export.

Structured data is de-identified by rule over every element, classified by its FHIR datatype
from the compiled R4 StructureDefinitions (``chartkeeper.fhir.definitions``), so a HumanName,
Address, ContactPoint, Identifier, Attachment or date is recognised wherever it occurs,
extensions and contained resources included:

- HumanName, ContactPoint (phone, fax, email, URL) and Identifier values are removed.
- date and dateTime values keep only the year; instant values (``meta.lastUpdated``,
  ``Observation.issued``...) are removed, and where R4 requires one (``Provenance.recorded``,
  ``Signature.when``) the element keeps only a data-absent-reason extension.
- A ``birthDate``/``bornDate`` that makes the person 90 or older at ``as_of`` is removed
  (year included) and replaced by a data-absent-reason ``masked`` extension plus
  ``AGE_GROUP_URL`` = "90 or older" on the element (``_birthDate``). Age values and
  year-valued quantities above 89 become ``{"value": 90, "comparator": ">="}``.
- Address keeps use, type, state, country and the first three ZIP digits ("000" for the
  restricted three-digit areas); lines, city, district, text and extensions (geocodes) go.
- Resource ids, element ids and every reference to them become keyed HMAC-SHA256 pseudonyms,
  so references still resolve inside an export and across exports made with the same key.
  ``Reference.display`` and conditional/absolute references are not kept as written.
- The resource's own narrative (``text``) is dropped; other narratives, every string and
  markdown element (Annotation.text, CodeableConcept.text, valueString, descriptions...) and
  text/* attachment data are scrubbed by ``find_phi`` (presidio-analyzer on a blank spaCy
  pipeline, pattern recognizers only, plus a deny-list of the patient's own identifiers);
  any other attachment data and URLs are removed.
- A few plain ``string`` elements that hold identifiers or names by definition (device
  serial and lot numbers, subscriber ids, FamilyMemberHistory.name...) are removed by path:
  no datatype marks them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Final

import orjson
import spacy
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    AbaRoutingRecognizer,
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    MacAddressRecognizer,
    MedicalLicenseRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
    UsBankRecognizer,
    UsItinRecognizer,
    UsMbiRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
    UuidRecognizer,
)
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.tokens import Doc
from sqlalchemy import false, select

from chartkeeper.fhir.definitions import load
from chartkeeper.security.access import exportable
from chartkeeper.security.privacy import restricted_patients
from chartkeeper.store import schema
from chartkeeper.store.service import Store, Txn, everything

__all__ = [
    "AGE_GROUP_URL", "RESTRICTED_ZIP3", "TAGS", "Finding", "PatientTerms",
    "DeidExport", "SafeHarborDeidentifier", "build_analyzer", "deidentified_export", "redact",
]

#: Three-digit ZIP areas of 20,000 or fewer people (2000 Census) that HHS's de-identification
#: guidance says must be reported as "000".
RESTRICTED_ZIP3: Final = frozenset({
    "036", "059", "063", "102", "203", "556", "692", "790", "821",
    "823", "830", "831", "878", "879", "884", "890", "893",
})
AGE_GROUP_URL: Final = "http://chartkeeper.org/fhir/StructureDefinition/deid-age-group"
DATA_ABSENT_URL: Final = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"

#: What each detected entity is replaced with in free text.
TAGS: Final[dict[str, str]] = {
    "PERSON": "[NAME]", "EMPLOYER": "[EMPLOYER]", "DATE": "[DATE]", "AGE_OVER_89": "[AGE 90+]",
    "STREET_ADDRESS": "[ADDRESS]", "LOCATION": "[LOCATION]", "ZIP_CODE": "[ZIP]",
    "PHONE_NUMBER": "[PHONE]", "EMAIL_ADDRESS": "[EMAIL]", "US_SSN": "[SSN]", "US_ITIN": "[SSN]",
    "MEDICAL_RECORD_NUMBER": "[MRN]", "HEALTH_PLAN_NUMBER": "[HEALTH_PLAN_ID]",
    "US_MBI": "[HEALTH_PLAN_ID]", "ACCOUNT_NUMBER": "[ACCOUNT]", "CREDIT_CARD": "[ACCOUNT]",
    "IBAN_CODE": "[ACCOUNT]", "US_BANK_NUMBER": "[ACCOUNT]", "ABA_ROUTING_NUMBER": "[ACCOUNT]",
    "LICENSE_NUMBER": "[LICENSE]", "MEDICAL_LICENSE": "[LICENSE]", "US_PASSPORT": "[LICENSE]",
    "CERTIFICATE_NUMBER": "[CERTIFICATE]", "VEHICLE_ID": "[VEHICLE]", "DEVICE_ID": "[DEVICE]",
    "MAC_ADDRESS": "[DEVICE]", "URL": "[URL]", "IP_ADDRESS": "[IP]", "BIOMETRIC_ID": "[BIOMETRIC]",
    "PHOTO": "[PHOTO]", "ID": "[ID]", "UUID": "[ID]",
}

# presidio's own recognizers score weak candidates low (a bare 9-digit number as a passport,
# 0.05); those below this are ignored. Every recognizer defined here scores 0.6 or more.
_PRESIDIO_THRESHOLD = 0.3
# Short texts (codes' display strings, units) repeat across a record: their analysis is cached.
_CACHED_TEXT_CHARS = 512
_PATIENT_CACHE_ENTRIES = 50_000


# ------------------------------------------------------------------------- free-text engine


class BlankEnglishNlpEngine(SpacyNlpEngine):
    """presidio's spaCy engine over ``spacy.blank("en")``: a tokenizer, no model to download.

    A blank pipeline has no NER and no lemmatizer, so names come only from the deny-list and
    patterns, and lower-cased tokens stand in for lemmas (presidio's context words still work).
    """

    def __init__(self) -> None:
        super().__init__(models=[{"lang_code": "en", "model_name": "blank:en"}])

    def load(self) -> None:
        # SpacyNlpEngine declares ``nlp`` as None until loaded.
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        return NlpArtifacts(
            entities=[], tokens=doc, tokens_indices=[token.idx for token in doc],
            lemmas=[token.lemma_ or token.lower_ for token in doc], nlp_engine=self,
            language=language, scores=[])


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email pattern without its public-suffix check.

    The check (tldextract) downloads the suffix list at first use; here every address-shaped
    string is PHI, known suffix or not.
    """

    def validate_result(self, pattern_text: str) -> bool:
        return True


_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
          r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_MONTH_CAP = (r"(?-i:(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?"
              r"|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
              r"|JAN|FEB|MAR|APR|MAY|JUNE?|JULY?|AUG|SEPT?|OCT|NOV|DEC)\.?)")
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_AGE = r"(?:9\d|1[01]\d)"
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|"
           "NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|VI|GU")
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|"
    "Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|"
    "Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|"
    "New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|"
    "Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|"
    "West Virginia|Wisconsin|Wyoming|Puerto Rico|District of Columbia")
_CAP_WORDS = r"(?-i:[A-Z][a-z'-]+(?:[ -][A-Z][a-z'-]+){0,2})"
_PERSON = (r"(?-i:(?!(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|The|This|He|She)\b)"
           r"[A-Z][a-zA-Z'-]+(?:[ \t]+[A-Z]\.)?(?:[ \t]+[A-Z][a-zA-Z'-]+)?)")
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Drive|Dr|Lane|Ln|Court|Ct|Way|Place|Pl|"
    r"Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Route|Rte|Alley|"
    r"Crescent|Row|Loop|Path|Pike|Plaza|Ridge|Turnpike|Walk|Heights)")
# A value after an identifier's label: letters, digits and single inner separators, with a digit.
_ID_VALUE = r"(?=[A-Za-z0-9./-]*\d)[A-Za-z0-9](?:[A-Za-z0-9]|[./-](?=[A-Za-z0-9])){2,}"
_LABEL_GAP = r"\s*(?:[:#=]|\bis\b|\bwas\b|\bof\b)?\s*#?\s*"
_NUMBER_WORD = r"(?:\s+(?:number|num|no\.?|#|id|identifier))?"

_ID_LABELS: dict[str, str] = {
    "MEDICAL_RECORD_NUMBER": (
        r"MRN|M\.R\.N\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|med\s+rec(?:ord)?\s*#?|"
        r"chart(?:\s+(?:number|no\.?|#))|hospital\s+(?:number|no\.?|#)|patient\s+(?:id|number)|"
        r"pt\.?\s+id|unit\s+(?:number|no\.?)"),
    "HEALTH_PLAN_NUMBER": (
        r"member(?:ship)?\s+(?:id|number|no\.?|#)|subscriber\s+(?:id|number|no\.?|#)|"
        r"policy" + _NUMBER_WORD + r"|group\s+(?:number|no\.?|#|id)|health\s+plan" + _NUMBER_WORD
        + r"|insurance\s+(?:id|number|no\.?|#)|beneficiary" + _NUMBER_WORD + r"|"
        r"medicare" + _NUMBER_WORD + r"|medicaid" + _NUMBER_WORD + r"|HICN|MBI|plan\s+id"),
    "ACCOUNT_NUMBER": (
        r"account" + _NUMBER_WORD + r"|acct\.?" + _NUMBER_WORD + r"|billing\s+(?:number|no\.?|#)|"
        r"invoice\s+(?:number|no\.?|#)|claim\s+(?:number|no\.?|#|id)|"
        r"(?:encounter|visit|case|FIN)\s+(?:number|no\.?|#|id)|card\s+(?:number|no\.?|#)|"
        r"routing\s+(?:number|no\.?|#)"),
    "LICENSE_NUMBER": (
        r"(?:driver'?s\s+)?licen[cs]e" + _NUMBER_WORD + r"|DL\s*(?:#|no\.?)|DEA" + _NUMBER_WORD
        + r"|NPI|passport" + _NUMBER_WORD + r"|state\s+id"),
    "CERTIFICATE_NUMBER": (
        r"certificate" + _NUMBER_WORD + r"|cert\.?\s*(?:number|no\.?|#)|"
        r"registration\s+(?:number|no\.?|#)"),
    "VEHICLE_ID": (
        r"VIN|vehicle\s+identification\s+number|vehicle\s+id|(?:license\s+)?plate"
        + _NUMBER_WORD + r"|tag\s+(?:number|no\.?|#)"),
    "DEVICE_ID": (
        r"serial" + _NUMBER_WORD + r"|S/N|SN|UDI|device\s+(?:id|identifier|serial)|"
        r"lot" + _NUMBER_WORD + r"|(?:pacemaker|implant|pump|defibrillator|ICD)\s+(?:id|serial)"),
    "BIOMETRIC_ID": (
        r"(?:fingerprint|voiceprint|voice\s+print|retinal\s+scan|iris\s+scan|palm\s+print|"
        r"biometric)(?:\s+(?:id|identifier|template|record|no\.?|#))?"),
    "US_SSN": r"SSN|S\.S\.N\.?|SS#|social\s+security" + _NUMBER_WORD,
}


def _labelled(entity: str, labels: str, value: str = _ID_VALUE) -> Pattern:
    return Pattern(f"{entity.lower()} after its label",
                   rf"\b(?:{labels})(?![A-Za-z]){_LABEL_GAP}\K{value}", 0.95)


def _pattern_recognizers() -> list[PatternRecognizer]:
    """Our recognizers for what presidio's predefined ones do not cover (or cover weakly)."""
    flags = re.DOTALL | re.MULTILINE | re.IGNORECASE

    def recognizer(entity: str, patterns: list[Pattern]) -> PatternRecognizer:
        return PatternRecognizer(supported_entity=entity, patterns=patterns,
                                 name=f"safe-harbor-{entity.lower()}", global_regex_flags=flags)

    dates = [
        # One separator twice: "7-8/10" is a pain score, not a date.
        Pattern("m/d/y", r"\b\d{1,2}([/.-])\d{1,2}\1(?:\d{4}|\d{2})\b", 0.85),
        Pattern("iso", r"\b\d{4}[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])"
                       r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
                0.85),
        Pattern("iso month", r"\b(?:18|19|20)\d{2}-(?:0[1-9]|1[0-2])\b(?!-\d)", 0.7),
        Pattern("month day year", rf"\b{_MONTH}\s*{_DAY},?\s*(?:of\s+)?(?:\d{{4}}|'\d{{2}})\b",
                0.9),
        Pattern("day month year",
                rf"\b{_DAY}(?:\s+of)?[\s/.-]*{_MONTH}[\s,/.-]*(?:\d{{4}}|\d{{2}})\b", 0.9),
        Pattern("month year", rf"\b{_MONTH}[\s,/.-]*(?:of\s+)?(?:\d{{4}}|'\d{{2}})\b", 0.85),
        Pattern("month day", rf"\b{_MONTH_CAP}\s+{_DAY}\b(?!\s*(?:mg|mcg|ml|units?|%|cm|mm|kg)\b)",
                0.8),
        Pattern("day month", rf"\b{_DAY}\s+(?:of\s+)?{_MONTH_CAP}\b", 0.8),
        Pattern("m/yyyy", r"\b(?:0?[1-9]|1[0-2])/(?:18|19|20)\d{2}\b", 0.85),
        Pattern("m/d after a date word",
                r"\b(?:on|since|from|until|till|dated|DOS|DOB|seen|admitted|discharged|born|"
                r"through|thru|before|after|starting|started|effective|f/u|follow-?up|appt|"
                r"appointment|RTC|return)[:\s]+\K"
                r"(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])\b(?![/.]\d)", 0.8),
        Pattern("holiday", r"\b(?-i:Christmas|Thanksgiving|New\s+Year'?s|Easter|Halloween|"
                           r"Independence\s+Day|Labor\s+Day|Memorial\s+Day|Valentine'?s\s+Day|"
                           r"Veterans\s+Day)(?:\s+(?:Day|Eve))?(?:,?\s+(?:of\s+)?\d{4})?\b", 0.7),
        Pattern("month name", r"\b(?-i:January|February|March|April|June|July|August|September|"
                              r"October|November|December)\b", 0.6),
        Pattern("day of month", r"\bon\s+the\s+\K(?:[12]?\d|3[01])(?:st|nd|rd|th)\b", 0.7),
        # A birth year alone tells the age: it goes even though years may stay.
        Pattern("birth year", r"\b(?:born|DOB|date\s+of\s+birth|birth\s+year|b\.)"
                              r"\s*(?:in|on|:)?\s*\K(?:18|19|20)\d{2}\b", 0.85),
    ]
    ages = [
        Pattern("age with unit", rf"\b{_AGE}[\s-]*(?:(?:years?|yrs?|y)[\s-]*(?:old\b|of\s+age\b)"
                                 r"|y\.?\s?/\s?o\b\.?|y\.\s?o\.|yo\b|y\.o\b)", 0.9),
        Pattern("age after its label",
                rf"\b(?:age[ds]?|aged)\s*(?:[:=]|of|is|was)?\s*\K{_AGE}\b", 0.9),
        Pattern("age in years", rf"\b{_AGE}\s+years?\b(?!\s+(?:ago|since|prior|later|before))",
                0.7),
        Pattern("age in words",
                r"\b(?:ninety|one\s+hundred(?:\s+and)?)(?:[\s-]+(?:one|two|three|four|five|six|"
                r"seven|eight|nine|ten|eleven|twelve))?[\s-]+(?:years?[\s-]+old|year-old)\b", 0.9),
        Pattern("age and sex", rf"\b{_AGE}(?-i:[MF])\b", 0.8),
        Pattern("age in words after a verb",
                r"\b(?:turned|turns|aged?|age\s+of|is\s+now)\s+\K(?:ninety|one\s+hundred"
                r"(?:\s+and)?)(?:[\s-]+(?:one|two|three|four|five|six|seven|eight|nine|ten|"
                r"eleven|twelve))?\b", 0.8),
        Pattern("age group word", r"\b(?:nonagenarian|centenarian|supercentenarian)s?\b", 0.8),
    ]
    zips = [
        Pattern("zip after state",
                rf"\b(?:(?-i:{_STATES})|{_STATE_NAMES})\.?,?\s{{1,3}}\K\d{{5}}(?:-\d{{4}})?\b",
                0.9),
        Pattern("zip after its label",
                r"\bzip(?:\s*code)?\s*(?:[:#]|is)?\s*\K\d{5}(?:-\d{4})?\b", 0.9),
        Pattern("zip+4", r"\b\d{5}-\d{4}\b", 0.8),
    ]
    streets = [
        Pattern("street address",
                r"\b\d{1,6}[A-Za-z]?(?:-\d+)?\s+(?:(?-i:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
                r"\.?\s+)?(?:(?-i:[A-Z][A-Za-z'-]*)\.?\s+|\d+(?:st|nd|rd|th)\s+){1,4}"
                rf"(?-i:{_STREET_SUFFIX})\b\.?(?:,?\s+(?:apt|apartment|suite|ste|unit|fl|floor|"
                r"rm|room|bldg|#)\.?\s*#?\s*[A-Za-z0-9-]+)?", 0.9),
        Pattern("street address, lower case",
                r"\b\d{1,6}\s+(?:[a-z]+\s+){1,3}(?:street|avenue|road|boulevard|drive|lane|court|"
                r"terrace|parkway|highway)\b", 0.8),
        Pattern("post office box", r"\bp\.?\s?o\.?\s*box\s+\d+\b", 0.9),
    ]
    locations = [
        Pattern("city before state",
                rf"\b{_CAP_WORDS}(?=,?\s+(?-i:{_STATES})\b\.?(?:,?\s+\d{{5}}|\s*$|[,.;)]))", 0.85),
        Pattern("city before state name", rf"\b{_CAP_WORDS}(?=,\s+(?:{_STATE_NAMES})\b)", 0.85),
        Pattern("place of residence",
                r"\b(?:lives|living|lived|resides|residing|resident|moved|relocated|born|"
                r"grew\s+up|raised|hometown\s+is|home\s+is)\s+(?:in|at|to|of|near|from)?\s*"
                rf"(?:the\s+)?\K{_CAP_WORDS}", 0.85),
        Pattern("county", r"\b(?-i:[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)\s+(?:county|parish)\b", 0.85),
    ]
    phones = [
        Pattern("phone", r"(?<![\d-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)|\b\d{3})[\s.-]?\d{3}[\s.-]?"
                         r"\d{4}\b(?:\s*(?:x|ext\.?|extension)\s*\d{1,5}\b)?", 0.8),
    ]
    ssns = [
        Pattern("ssn", r"\b\d{3}-\d{2}-\d{4}\b", 0.9),
        Pattern("ssn with spaces", r"\b\d{3}\s\d{2}\s\d{4}\b", 0.8),
        _labelled("US_SSN", _ID_LABELS["US_SSN"], r"\d{3}[-\s]?\d{2}[-\s]?\d{4}\b"),
    ]
    persons = [
        Pattern("name after a title",
                rf"\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Rev|Sr|Jr)\.?\s+\K{_PERSON}", 0.85),
        Pattern("name after its label",
                r"\b(?:name|patient|pt|signed|attending|PCP|referring(?:\s+physician)?|"
                r"provider|emergency\s+contact|guardian|NOK|next\s+of\s+kin)\s*:\s*\K" + _PERSON,
                0.8),
        Pattern("name after a verb", r"\b(?:signed|dictated|seen|referred|accompanied|"
                                     r"transcribed|examined)\s+by\s+\K" + _PERSON, 0.8),
        Pattern("first and last name after pt",
                r"\b(?:pt|patient)\.?[ ]+\K(?-i:[A-Z][a-z'-]+[ ]+[A-Z][a-z'-]+)\b", 0.7),
        Pattern("relative's name",
                r"\b(?:wife|husband|son|daughter|mother|father|mom|dad|brother|sister|spouse|"
                r"partner|boyfriend|girlfriend|fianc[eé]e?|friend|neighbou?r|caregiver|grandson|"
                r"granddaughter|grandmother|grandfather|niece|nephew|aunt|uncle|cousin|roommate|"
                r"stepson|stepdaughter)(?:,|\s+named|\s+is)?\s+\K" + _PERSON, 0.8),
    ]
    employers = [
        Pattern("employer", r"\b(?:works|worked|working|employed|employee)\s+(?:at|for|by|with)"
                            r"\s+(?:the\s+)?\K(?-i:[A-Z][A-Za-z&'-]*"
                            r"(?:[ \t]+(?:(?:of|and|&)[ \t]+)?[A-Z][A-Za-z&'-]*)*)", 0.8),
    ]
    vehicles = [
        _labelled("VEHICLE_ID", _ID_LABELS["VEHICLE_ID"],
                  r"(?=[A-Za-z0-9 -]{0,10}\d)[A-Za-z0-9]{1,4}(?:[ -]?[A-Za-z0-9]{2,6})?"
                  r"(?:[A-Za-z0-9-]*)\b"),
        Pattern("vin", r"\b(?=[A-HJ-NPR-Z0-9]*\d)(?=[0-9]*[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}\b",
                0.85),
    ]
    devices = [
        _labelled("DEVICE_ID", _ID_LABELS["DEVICE_ID"]),
        Pattern("gs1 udi", r"\(01\)\d{14}(?:\(\d{2,4}\)[A-Za-z0-9-]{1,20})*", 0.9),
    ]
    identifiers = [
        Pattern("long number", r"\b\d{7,}\b", 0.6),
        Pattern("letters and five digits",
                r"\b(?=(?:[A-Z-]*\d){5})(?=[0-9-]*[A-Z])[A-Z0-9]+(?:-[A-Z0-9]+)*\b", 0.6),
        Pattern("grouped digits", r"\b\d{2,}(?:-\d{2,}){2,}\b", 0.6),
    ]
    photos = [Pattern("image file", r"\b[\w-]+\.(?:jpe?g|png|gif|bmp|tiff?|heic|dcm)\b", 0.8)]
    recognizers = [
        recognizer("DATE", dates), recognizer("AGE_OVER_89", ages),
        recognizer("ZIP_CODE", zips), recognizer("STREET_ADDRESS", streets),
        recognizer("LOCATION", locations), recognizer("PHONE_NUMBER", phones),
        recognizer("US_SSN", ssns), recognizer("PERSON", persons),
        recognizer("EMPLOYER", employers), recognizer("VEHICLE_ID", vehicles),
        recognizer("DEVICE_ID", devices), recognizer("ID", identifiers),
        recognizer("PHOTO", photos),
    ]
    for entity in ("MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_NUMBER", "ACCOUNT_NUMBER",
                   "LICENSE_NUMBER", "CERTIFICATE_NUMBER", "BIOMETRIC_ID"):
        recognizers.append(recognizer(entity, [_labelled(entity, _ID_LABELS[entity])]))
    return recognizers


def build_analyzer() -> AnalyzerEngine:
    """presidio's AnalyzerEngine on a blank English pipeline with the Safe Harbor recognizers.

    Costly to build (regex compilation, phone metadata): build once and reuse.
    """
    predefined: list[EntityRecognizer] = [
        # One region: the matcher scans the text once per region; numbers written with a
        # +country code are found whatever the region.
        OfflineEmailRecognizer(), PhoneRecognizer(supported_regions=("US",)), UrlRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(), CreditCardRecognizer(), IbanRecognizer(), UsMbiRecognizer(),
        MedicalLicenseRecognizer(), UsItinRecognizer(), UsPassportRecognizer(),
        UsBankRecognizer(), AbaRoutingRecognizer(), MacAddressRecognizer(), UuidRecognizer(),
    ]
    registry = RecognizerRegistry(recognizers=[*predefined, *_pattern_recognizers()],
                                  supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=BlankEnglishNlpEngine(),
                          supported_languages=["en"])


@dataclass(frozen=True, slots=True)
class Finding:
    """One stretch of free text judged to be PHI."""

    entity: str
    start: int
    end: int
    score: float

    @property
    def tag(self) -> str:
        return TAGS.get(self.entity, "[PHI]")


def _merge(findings: Iterable[Finding]) -> list[Finding]:
    """Overlapping findings become one, labelled by the most confident (then longest) one."""
    merged: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            best = max((last, finding), key=lambda f: (f.score, f.end - f.start))
            merged[-1] = Finding(best.entity, last.start, max(last.end, finding.end), best.score)
        else:
            merged.append(finding)
    return merged


def redact(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with each (merged, ordered) finding replaced by its tag."""
    parts: list[str] = []
    position = 0
    for finding in findings:
        parts.append(text[position:finding.start])
        parts.append(finding.tag)
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


# ------------------------------------------------------------------- the patient's own terms


@dataclass
class _RecordFacts:
    names: set[str] = field(default_factory=set)
    lines: set[str] = field(default_factory=set)
    places: set[str] = field(default_factory=set)
    zips: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)


def _flexible(value: str) -> str:
    """A regex for an identifier or phone number however it is punctuated or spaced."""
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) == 11 and digits[0] == "1" and not any(c.isalpha() for c in value):
        digits = digits[1:]
    if len(digits) == 10 and not any(c.isalpha() for c in value):
        # A North American number: (413) 555-0199, 413.555.0199, +1 413 555 0199...
        core = rf"\(?{digits[:3]}\)?\W{{0,2}}{digits[3:6]}\W{{0,2}}{digits[6:]}"
        return rf"(?<![A-Za-z0-9])(?:\+?1\W{{0,2}})?{core}(?![A-Za-z0-9])"
    runs = re.findall(r"[A-Za-z0-9]+", value)
    return r"(?<![A-Za-z0-9])" + r"\W{0,3}".join(runs) + r"(?![A-Za-z0-9])"


@dataclass(frozen=True)
class PatientTerms:
    """Deny-list recognizers built from one patient's own record (names, address, ids...)."""

    recognizers: tuple[PatternRecognizer, ...]
    # Findings in short texts, which repeat across a record (display strings, units).
    _cache: dict[str, tuple[Finding, ...]] = field(default_factory=dict, compare=False,
                                                   repr=False)

    def find(self, text: str) -> tuple[Finding, ...]:
        """Where this patient's own names, address, telecoms and ids occur in ``text``."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        found = tuple(Finding(r.entity_type, r.start, r.end, r.score)
                      for recognizer in self.recognizers
                      for r in recognizer.analyze(text, recognizer.supported_entities))
        if len(text) <= _CACHED_TEXT_CHARS and len(self._cache) < _PATIENT_CACHE_ENTRIES:
            self._cache[text] = found
        return found

    @classmethod
    def empty(cls) -> PatientTerms:
        return cls(())

    @classmethod
    def from_facts(cls, facts: _RecordFacts) -> PatientTerms:
        sensitive = sorted(n for n in facts.names if n.lower() not in STOP_WORDS)
        # A given name that is also an English word ("Will", "May") is matched capitalized only.
        words = sorted(n for n in facts.names if n.lower() in STOP_WORDS)
        recognizers: list[PatternRecognizer] = []

        def deny(entity: str, terms: Iterable[str], flags: int | None = None) -> None:
            listed = sorted(set(terms), key=len, reverse=True)
            if listed:
                recognizers.append(PatternRecognizer(
                    supported_entity=entity, deny_list=listed, deny_list_score=1.0,
                    name=f"patient-{entity.lower()}",
                    global_regex_flags=flags if flags is not None else
                    re.DOTALL | re.MULTILINE | re.IGNORECASE))

        def flexible(entity: str, values: Iterable[str]) -> None:
            # One alternation per entity: a record has dozens of identifiers, and compiling
            # a pattern for each dominated the time of short records.
            listed = sorted({v for v in values if sum(c.isalnum() for c in v) >= 4},
                            key=len, reverse=True)
            if listed:
                regex = "|".join(f"(?:{_flexible(v)})" for v in listed)
                # Scored under the labelled patterns, so "MRN 123" keeps its [MRN] tag.
                recognizers.append(PatternRecognizer(
                    supported_entity=entity, name=f"patient-{entity.lower()}",
                    patterns=[Pattern(f"patient {entity.lower()}", regex, 0.75)]))

        deny("PERSON", sensitive)
        deny("PERSON", [*words, *(w.upper() for w in words)], re.DOTALL | re.MULTILINE)
        deny("STREET_ADDRESS", facts.lines)
        deny("LOCATION", facts.places)
        deny("EMAIL_ADDRESS", facts.emails)
        flexible("ZIP_CODE", facts.zips)
        flexible("PHONE_NUMBER", facts.phones)
        flexible("ID", facts.identifiers)
        return cls(tuple(recognizers))


_NAME_SPLIT = re.compile(r"[\s,]+")
_HONORIFICS = frozenset({"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "rev", "sr", "jr", "ii",
                         "iii", "md", "phd", "rn", "np", "pa", "dds", "esq"})


def _name_terms(text: str) -> Iterator[str]:
    text = text.strip()
    if len(text) >= 2:
        yield text
    for token in _NAME_SPLIT.split(text):
        token = token.strip(".'\"()")
        if len(token) >= 2 and token.lower() not in _HONORIFICS:
            yield token
            if "-" in token:
                yield from (p for p in token.split("-") if len(p) >= 2)


# ------------------------------------------------------------------------ the element model


@dataclass(frozen=True, slots=True)
class _Element:
    type_code: str
    node: str | None  # where to walk into for complex and backbone values; None: primitive
    required: bool
    array: bool


@dataclass(frozen=True)
class _Model:
    nodes: dict[str, dict[str, _Element]]
    resource_types: frozenset[str]


_SYSTEM_STRING = "http://hl7.org/fhirpath/System.String"


@cache
def _model() -> _Model:
    """Every JSON property of every resource, datatype and backbone element, with its type."""
    definitions = load()
    sds = definitions.structure_definitions
    primitives = {name for name, sd in sds.items() if sd["kind"] == "primitive-type"}
    nodes: dict[str, dict[str, _Element]] = {}
    for sd in sds.values():
        if sd["kind"] == "primitive-type":
            continue
        by_path = {el["path"]: el for el in sd["elements"]}
        parents = {el["path"].rsplit(".", 1)[0] for el in sd["elements"] if "." in el["path"]}
        for el in sd["elements"]:
            path = el["path"]
            if "." not in path or el["max"] == "0":
                continue
            parent, name = path.rsplit(".", 1)
            target = el["contentReference"].lstrip("#") if "contentReference" in el else path
            rules = nodes.setdefault(parent, {})
            for type_ref in by_path[target].get("types", []):
                code = type_ref["code"]
                if code == _SYSTEM_STRING:
                    code = ("id" if sd["kind"] == "resource" and path == f"{sd['type']}.id" else
                            "uri" if path == "Extension.url" else
                            "elementid" if name == "id" else "string")
                key = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
                node = None if code in primitives or code in ("elementid", "id") else (
                    target if target in parents else code)
                rules[key] = _Element(code, node, el["min"] > 0, el["max"] != "1")
    return _Model(nodes, definitions.resource_types)


# Plain strings that hold an identifier or a person's name by definition: removed, and their
# values join the patient's deny-list. ``_DROPPED`` adds geocodes, meta and display text.
_IDENTIFIER_STRINGS: Final = frozenset({
    "Coverage.subscriberId", "Coverage.dependent", "Claim.insurance.preAuthRef",
    "ClaimResponse.preAuthRef", "CoverageEligibilityResponse.preAuthRef",
    "ExplanationOfBenefit.preAuthRef", "ExplanationOfBenefit.insurance.preAuthRef",
    "Device.udiCarrier.deviceIdentifier",
    "Device.udiCarrier.carrierHRF", "Device.distinctIdentifier", "Device.lotNumber",
    "Device.serialNumber", "Immunization.lotNumber", "Medication.batch.lotNumber",
    "AuditEvent.agent.altId", "AuditEvent.agent.network.address",
    "MolecularSequence.repository.datasetId", "MolecularSequence.repository.variantsetId",
    "MolecularSequence.repository.readsetId",
})
_NAME_STRINGS: Final = frozenset({"FamilyMemberHistory.name"})
_DROPPED: Final = _IDENTIFIER_STRINGS | _NAME_STRINGS | frozenset({
    "Annotation.authorString", "AuditEvent.agent.name",  # staff names, mostly: not deny-listed
    "Location.position", "Meta.versionId", "Meta.source", "Reference.display",
    "Attachment.size", "Attachment.hash",
})
_REMOVED_TYPES: Final = frozenset({"HumanName", "ContactPoint", "Identifier"})
# Extensions whose string value is a person's name.
_NAME_EXTENSIONS: Final = frozenset({
    "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
    "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
    "http://hl7.org/fhir/StructureDefinition/humanname-partner-name",
    "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family",
    "http://hl7.org/fhir/StructureDefinition/humanname-fathers-family",
    "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix",
    "http://hl7.org/fhir/StructureDefinition/humanname-partner-prefix",
})
_PERSON_RESOURCES: Final = frozenset({"Patient", "RelatedPerson", "Person"})
_BIRTH_ELEMENTS: Final = frozenset({"birthDate", "bornDate"})
_YEAR_UNITS: Final = frozenset({"a", "yr", "yrs", "year", "years", "y"})
_DATE_START = re.compile(r"\d{4}")
_RELATIVE_REF = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[A-Za-z0-9.-]+)?")
_ABSOLUTE_REF = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://\S*?/([A-Z][A-Za-z]+)/([A-Za-z0-9.-]{1,64})"
    r"(?:/_history/[A-Za-z0-9.-]+)?")
_CONDITIONAL_REF = re.compile(r"([A-Z][A-Za-z]+)\?\S+")
_ZIP = re.compile(r"\s*(\d{5})(?:-?\d{4})?\s*")
_TAG = re.compile(r"<[^>]*>")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_US = frozenset({"us", "usa", "united states", "united states of america"})


class _Drop:
    """Marks an element the rules remove."""


_DROP: Final = _Drop()


def _masked(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"extension": [{"url": DATA_ABSENT_URL, "valueCode": "masked"}, *extra]}


def _shape(value: object) -> str:
    # The kind of value only: its content may be PHI, and error messages reach logs.
    if isinstance(value, str | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- de-identifier


class SafeHarborDeidentifier:
    """De-identifies FHIR R4 resources (plain dicts) by the Safe Harbor method.

    ``key`` keys the pseudonyms (HMAC-SHA256): the same id gets the same pseudonym under the
    same key, and nobody without the key can recompute or reverse it. ``as_of`` is the date
    ages are computed at (default: today, UTC).
    """

    def __init__(self, key: bytes, *, as_of: date | None = None,
                 cache_size: int = 16384) -> None:
        if len(key) < 16:
            raise ValueError(f"the pseudonym key must be at least 16 bytes, got {len(key)}")
        self._key = key
        self.as_of = as_of or datetime.now(UTC).date()
        self.analyzer = build_analyzer()
        self._model = _model()
        self._generic_cached: Callable[[str], tuple[Finding, ...]] = lru_cache(
            maxsize=cache_size)(self._generic_findings)

    # -- pseudonyms

    def pseudonym(self, value: str) -> str:
        """The export's id for an id: 32 hex characters of HMAC-SHA256(key, id)."""
        return hmac.new(self._key, b"id\0" + value.encode(), hashlib.sha256).hexdigest()[:32]

    def _pseudo_uuid(self, value: str) -> str:
        digest = hmac.new(self._key, b"uuid\0" + value.encode(), hashlib.sha256).digest()
        return f"urn:uuid:{uuid.UUID(bytes=digest[:16], version=4)}"

    # -- free text

    def _generic_findings(self, text: str) -> tuple[Finding, ...]:
        results: list[RecognizerResult] = self.analyzer.analyze(
            text=text, language="en", score_threshold=_PRESIDIO_THRESHOLD)
        return tuple(Finding(r.entity_type, r.start, r.end, r.score) for r in results)

    def find_phi(self, text: str, terms: PatientTerms | None = None) -> list[Finding]:
        """Where PHI is in ``text``: presidio + our patterns, and the patient's own terms."""
        if not text.strip():
            return []
        found = list(self._generic_cached(text) if len(text) <= _CACHED_TEXT_CHARS
                     else self._generic_findings(text))
        if terms is not None:
            found.extend(terms.find(text))
        return _merge(found)

    def scrub_text(self, text: str, terms: PatientTerms | None = None) -> str:
        """``text`` with every finding replaced by its tag (``[NAME]``, ``[DATE]``...)."""
        return redact(text, self.find_phi(text, terms))

    # -- one patient's record

    def terms_for(self, resources: Iterable[dict[str, Any]]) -> PatientTerms:
        """The deny-list of a record: names, addresses, telecoms, ids found in its resources."""
        facts = _RecordFacts()
        for resource in resources:
            rtype = resource["resourceType"]
            self._collect(resource, rtype, rtype, facts, rtype in _PERSON_RESOURCES)
        return PatientTerms.from_facts(facts)

    def deidentify_patient(self, resources: Iterable[object]) -> list[dict[str, Any]]:
        """De-identify one patient's record (the Patient, its compartment and what it cites).

        Every resource is checked first: a non-object or an unknown resourceType raises
        ValueError before anything is returned.
        """
        checked = [self._checked(resource) for resource in resources]
        terms = self.terms_for(checked)
        return [self.deidentify(resource, terms) for resource in checked]

    def deidentify(self, resource: object, terms: PatientTerms | None = None) -> dict[str, Any]:
        """One de-identified copy of ``resource`` (the input is not changed)."""
        checked = self._checked(resource)
        return self._resource(checked, terms or self.terms_for([checked]))

    def _checked(self, resource: object) -> dict[str, Any]:
        if not isinstance(resource, dict):
            raise ValueError(f"a FHIR resource must be a JSON object, got {_shape(resource)}")
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or rtype not in self._model.resource_types:
            raise ValueError(f"unknown resourceType {rtype!r}: expected an R4 resource type")
        return resource

    # -- collecting the deny-list

    def _collect(self, obj: dict[str, Any], node: str, rtype: str, facts: _RecordFacts,
                 person: bool) -> None:
        rules = self._model.nodes.get(node, {})
        for key, value in obj.items():
            element = rules.get(key)
            if element is None:
                continue
            where = f"{node}.{key}"
            for item in value if isinstance(value, list) else [value]:
                if where in _IDENTIFIER_STRINGS and isinstance(item, str):
                    facts.identifiers.add(item)
                elif where in _NAME_STRINGS and isinstance(item, str):
                    facts.names.update(_name_terms(item))
                elif not isinstance(item, dict):
                    continue
                elif element.type_code == "Identifier":
                    if isinstance(item.get("value"), str) and len(item["value"]) >= 4:
                        facts.identifiers.add(item["value"])
                elif element.type_code == "Resource":
                    inner = item.get("resourceType")
                    if isinstance(inner, str):
                        self._collect(item, inner, inner, facts, inner in _PERSON_RESOURCES)
                elif element.type_code == "Extension" and item.get("url") in _NAME_EXTENSIONS:
                    if isinstance(item.get("valueString"), str):
                        facts.names.update(_name_terms(item["valueString"]))
                elif person and element.type_code in ("HumanName", "Address", "ContactPoint"):
                    self._collect_person(element.type_code, item, facts)
                elif element.node is not None:
                    self._collect(item, element.node, rtype, facts, person)

    @staticmethod
    def _collect_person(type_code: str, item: dict[str, Any], facts: _RecordFacts) -> None:
        def strings(*keys: str) -> Iterator[str]:
            for key in keys:
                value = item.get(key)
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and v.strip():
                        yield v.strip()

        if type_code == "HumanName":
            for part in strings("family", "given", "text"):
                facts.names.update(_name_terms(part))
        elif type_code == "Address":
            facts.lines.update(strings("line", "text"))
            facts.places.update(strings("city", "district"))
            for postal in strings("postalCode"):
                match = _ZIP.fullmatch(postal)
                if match:
                    facts.zips.add(match.group(1))
        else:
            for telecom in strings("value"):
                if item.get("system") == "email" or "@" in telecom:
                    facts.emails.add(telecom)
                elif sum(c.isdigit() for c in telecom) >= 7:
                    facts.phones.add(telecom)

    # -- the walk

    def _resource(self, resource: dict[str, Any], terms: PatientTerms) -> dict[str, Any]:
        rtype = resource["resourceType"]
        return {"resourceType": rtype, **self._object(resource, rtype, terms, top=True)}

    def _object(self, obj: dict[str, Any], node: str, terms: PatientTerms,
                top: bool = False) -> dict[str, Any]:
        rules = self._model.nodes.get(node, {})
        out: dict[str, Any] = {}
        handled: set[str] = set()  # primitives whose ``_name`` sibling was written or must go
        for key, value in obj.items():
            if key.startswith("_") or (top and key == "resourceType"):
                continue
            element = rules.get(key)
            where = f"{node}.{key}"
            if element is None or where in _DROPPED:
                handled.add(key)  # unknown properties cannot be classified: they go
                continue
            if key in _BIRTH_ELEMENTS and element.type_code == "date":
                year = self._birth(value, where)
                handled.add(key)
                if year is None:
                    out[f"_{key}"] = _masked({"url": AGE_GROUP_URL, "valueString": "90 or older"})
                else:
                    out[key] = year
                continue
            if top and element.type_code == "Narrative":
                continue  # the resource's own narrative renders what is removed here
            result = self._element(value, element, key, where, obj, terms)
            if result is _DROP:
                handled.add(key)
                if element.required and element.node is None:
                    out[f"_{key}"] = _masked()
            else:
                out[key] = result
                if isinstance(value, list) and len(result) != len(value):
                    handled.add(key)  # ``_name`` entries would no longer line up
        for key, value in obj.items():
            base = key[1:]
            if not key.startswith("_") or base in handled:
                continue
            element = rules.get(base)
            if element is None or element.node is not None or f"{node}.{base}" in _DROPPED:
                continue
            if base not in obj and self._primitive_dropped(element.type_code):
                continue
            shadow = self._shadow(value, f"{node}.{key}", terms)
            if shadow is not _DROP:
                out[key] = shadow
        return out

    @staticmethod
    def _primitive_dropped(type_code: str) -> bool:
        return type_code in ("instant", "url", "base64Binary", "xhtml")

    def _shadow(self, value: object, where: str, terms: PatientTerms) -> Any:
        """A primitive's ``_name`` element (id and extensions), or a list of them."""
        if isinstance(value, list):
            items = [None if v is None else self._shadow(v, where, terms) for v in value]
            items = [None if v is _DROP else v for v in items]
            return items if any(v is not None for v in items) else _DROP
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a JSON object, got {_shape(value)}")
        result = self._object(value, "Element", terms)
        return result or _DROP

    def _element(self, value: object, element: _Element, key: str, where: str,
                 parent: dict[str, Any], terms: PatientTerms) -> Any:
        if isinstance(value, list):
            items = [None if v is None and element.node is None else
                     self._item(v, element, key, where, parent, terms) for v in value]
            kept = [v for v in items if v is not _DROP]
            return kept if any(v is not None for v in kept) else _DROP
        return self._item(value, element, key, where, parent, terms)

    def _item(self, value: object, element: _Element, key: str, where: str,
              parent: dict[str, Any], terms: PatientTerms) -> Any:
        code = element.type_code
        if element.node is None:
            return self._primitive(value, code, key, where, parent, terms)
        if code == "Resource":
            return self._resource(self._checked(value), terms)
        if code in _REMOVED_TYPES:
            return _DROP
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a JSON object, got {_shape(value)}")
        if code == "Address":
            return self._address(value, terms)
        if code == "Narrative":
            return self._narrative(value, where, terms)
        if code == "Extension" and value.get("url") in _NAME_EXTENSIONS:
            return _DROP
        result = self._object(value, element.node, terms)
        if code == "Reference" and "reference" in value and "reference" not in result:
            return _DROP  # a reference that cannot be kept leaves nothing to follow
        if code in ("Age", "Quantity"):
            self._cap_age(result, code)
        if code == "Attachment" and not element.required and not (
                {"data", "url"} & result.keys()):
            return _DROP  # a photo without its image (Patient.photo) says nothing
        return result or _DROP

    def _primitive(self, value: object, code: str, key: str, where: str,
                   parent: dict[str, Any], terms: PatientTerms) -> Any:
        if code in ("date", "dateTime"):
            if not isinstance(value, str) or not _DATE_START.match(value):
                raise ValueError(f"{where} must be a FHIR {code}, got {_shape(value)}")
            return value[:4]
        if code in ("string", "markdown"):
            if not isinstance(value, str):
                raise ValueError(f"{where} must be a string, got {_shape(value)}")
            if where == "Reference.reference":
                return self._reference(value)
            return self.scrub_text(value, terms)
        if code in ("id", "elementid"):
            if not isinstance(value, str):
                raise ValueError(f"{where} must be a string id, got {_shape(value)}")
            return self.pseudonym(value)
        if code in ("uuid", "uri") and isinstance(value, str) and value.startswith("urn:uuid:"):
            return self._pseudo_uuid(value)
        if code == "base64Binary":
            return self._text_data(value, parent, where, terms) if key == "data" else _DROP
        if self._primitive_dropped(code):
            return _DROP
        return value

    # -- datatype rules

    def _birth(self, value: object, where: str) -> str | None:
        """The birth year, or None when it makes the person 90 or older at ``as_of``."""
        if not isinstance(value, str) or not _DATE_START.match(value):
            raise ValueError(f"{where} must be a FHIR date, got {_shape(value)}")
        parts = [int(p) for p in re.findall(r"\d+", value[:10])] + [1, 1]
        year, month, day = parts[0], parts[1], parts[2]
        # Missing month or day count as January 1st: the oldest the person can be.
        age = self.as_of.year - year - ((self.as_of.month, self.as_of.day) < (month, day))
        return None if age >= 90 else value[:4]

    @staticmethod
    def _cap_age(quantity: dict[str, Any], code: str) -> None:
        value = quantity.get("value")
        unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
        in_years = unit in _YEAR_UNITS or (code == "Age" and not unit)
        if in_years and isinstance(value, int | float) and value > 89:
            quantity["value"] = 90
            quantity["comparator"] = ">="

    def _reference(self, reference: str) -> Any:
        if reference == "#":
            return reference
        if reference.startswith("#"):
            return "#" + self.pseudonym(reference[1:])
        if reference.startswith("urn:uuid:"):
            return self._pseudo_uuid(reference)
        match = _RELATIVE_REF.fullmatch(reference) or _ABSOLUTE_REF.fullmatch(reference)
        if match and match.group(1) in self._model.resource_types:
            return f"{match.group(1)}/{self.pseudonym(match.group(2))}"
        conditional = _CONDITIONAL_REF.fullmatch(reference)
        if conditional and conditional.group(1) in self._model.resource_types:
            # The search names identifiers: it becomes an opaque (unresolvable) pseudonym.
            return f"{conditional.group(1)}/{self.pseudonym(reference)}"
        return _DROP

    def _address(self, address: dict[str, Any], terms: PatientTerms) -> Any:
        out: dict[str, Any] = {}
        for key in ("use", "type", "state", "country"):
            if isinstance(address.get(key), str):
                out[key] = address[key]
        if isinstance(address.get("period"), dict):
            period = self._object(address["period"], "Period", terms)
            if period:
                out["period"] = period
        postal = address.get("postalCode")
        country = str(address.get("country", "US")).strip().lower()
        if isinstance(postal, str) and country in _US:
            match = _ZIP.fullmatch(postal)
            if match:
                zip3 = match.group(1)[:3]
                out["postalCode"] = "000" if zip3 in RESTRICTED_ZIP3 else zip3
        return out or _DROP

    def _narrative(self, narrative: dict[str, Any], where: str, terms: PatientTerms) -> Any:
        div = narrative.get("div")
        if not isinstance(div, str):
            return _DROP
        text = html.unescape(_TAG.sub(" ", div))
        scrubbed = html.escape(self.scrub_text(" ".join(text.split()), terms), quote=False)
        return {"status": narrative.get("status", "generated"),
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{scrubbed}</div>'}

    def _text_data(self, data: object, parent: dict[str, Any], where: str,
                   terms: PatientTerms) -> Any:
        """Attachment/Binary data: text is decoded, scrubbed and encoded again; else removed."""
        content_type = str(parent.get("contentType", ""))
        if not content_type.lower().startswith("text/"):
            return _DROP
        if not isinstance(data, str):
            raise ValueError(f"{where} must be base64 text, got {_shape(data)}")
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where} is not valid base64: {exc}") from exc
        charset = _CHARSET.search(content_type)
        try:
            text = raw.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:
            text = raw.decode("utf-8", errors="replace")
        return base64.b64encode(self.scrub_text(text, terms).encode("utf-8")).decode("ascii")


# ------------------------------------------------------------------------------- the export


def _all_patient_ids(txn: Txn) -> list[str]:
    r = schema.resource
    return list(txn.conn.execute(
        select(r.c.resource_id).where(r.c.resource_type == "Patient", r.c.deleted == false())
        .order_by(r.c.pk)).scalars())


@dataclass(frozen=True)
class DeidExport:
    counts: dict[str, int]  # resources written per type
    withheld: int  # restricted patients skipped and sensitive resources left out


def deidentified_export(store: Store, out_dir: Path, key: bytes,
                        patient_ids: Sequence[str] | None = None, *, as_of: date | None = None,
                        deidentifier: SafeHarborDeidentifier | None = None,
                        on_patient: Callable[[int, int], None] | None = None) -> DeidExport:
    """Write a Safe Harbor de-identified copy of patients' records as ``<Type>.ndjson`` files.

    ``patient_ids`` None exports every patient. One patient at a time (Patient/$everything:
    the compartment and what it cites), in one read transaction, so memory holds one record
    (plus an 8-byte digest per resource written, so that a Practitioner cited by many patients
    is written once). ``out_dir`` must hold no NDJSON files yet: exports are not mixed. Files
    are written to a temporary folder in ``out_dir`` and moved into place at the end, so on
    any error nothing is left behind. Returns resources written per type;
    ``on_patient(done, total)`` reports progress.
    """
    if out_dir.is_dir() and any(out_dir.glob("*.ndjson")):
        raise ValueError(f"{out_dir} already holds NDJSON files; export into an empty directory")
    deid = deidentifier or SafeHarborDeidentifier(key, as_of=as_of)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".deid-", dir=out_dir))
    counts: dict[str, int] = {}
    written: set[bytes] = set()
    handles: dict[str, Any] = {}
    withheld = 0
    restricted = restricted_patients(store.engine)
    try:
        with store.read() as txn:
            ids = list(patient_ids) if patient_ids is not None else _all_patient_ids(txn)
            for done, patient_id in enumerate(ids, 1):
                record = everything(txn, patient_id)
                kept = [] if patient_id in restricted else exportable(record, patient_id)
                withheld += len(record) - len(kept)
                for resource in deid.deidentify_patient(kept):
                    rtype = resource["resourceType"]
                    digest = hashlib.blake2b(f"{rtype}/{resource.get('id')}".encode(),
                                             digest_size=8).digest()
                    if "id" in resource and digest in written:
                        continue
                    written.add(digest)
                    handle = handles.get(rtype)
                    if handle is None:
                        handle = handles[rtype] = (staging / f"{rtype}.ndjson").open("wb")
                    handle.write(orjson.dumps(resource) + b"\n")
                    counts[rtype] = counts.get(rtype, 0) + 1
                if on_patient is not None:
                    on_patient(done, len(ids))
        for handle in handles.values():
            handle.close()
        for rtype in counts:
            os.replace(staging / f"{rtype}.ndjson", out_dir / f"{rtype}.ndjson")
    finally:
        for handle in handles.values():
            handle.close()
        shutil.rmtree(staging, ignore_errors=True)
    return DeidExport(dict(sorted(counts.items())), withheld)
