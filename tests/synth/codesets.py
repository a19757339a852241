"""Code-set checks for the synthetic hospital's tests, from the reference data in
../shared/data/codesets (test material only: the generator carries its own codes)."""

from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path
from xml.etree import ElementTree as etree  # noqa: N813 - trusted reference data

ICD10CM_FY2026 = Path("codesets/icd10cm_fy2026_tabular_simple-icd-10-cm/code-list-April-2026.txt")
ICD10PCS_FY2026 = Path("codesets/icd10pcs-fy2026-tables/icd10pcs_tables_2026.xml")
HCPCS_2020 = Path("codesets/hcpcs_2020_cms/2020-Alpha-Numeric-HCPCS-File.zip")


@functools.cache
def billable_icd10cm(shared_data: Path) -> frozenset[str]:
    """Leaf codes of the April 2026 ICD-10-CM tabular (a code with no longer code under it),
    dotted as FHIR writes them."""
    codes = [line.strip() for line in (shared_data / ICD10CM_FY2026).read_text().splitlines()
             if line.strip() and "-" not in line]
    listed = set(codes)
    parents = {code[:n] for code in codes for n in range(3, len(code)) if code[:n] in listed}
    return frozenset(code if len(code) == 3 else f"{code[:3]}.{code[3:]}"
                     for code in listed - parents)


@functools.cache
def _pcs_rows(shared_data: Path) -> dict[str, list[list[frozenset[str]]]]:
    """For each 3-character table (section, body system, operation): its rows, each the
    allowed values of characters 4 to 7."""
    tables: dict[str, list[list[frozenset[str]]]] = {}
    root = etree.parse(shared_data / ICD10PCS_FY2026).getroot()
    for table in root.iter("pcsTable"):
        head = {int(axis.get("pos")): axis.find("label").get("code")
                for axis in table.findall("axis")}
        prefix = head[1] + head[2] + head[3]
        for row in table.findall("pcsRow"):
            values = {int(axis.get("pos")): frozenset(label.get("code")
                                                      for label in axis.findall("label"))
                      for axis in row.findall("axis")}
            tables.setdefault(prefix, []).append([values[pos] for pos in (4, 5, 6, 7)])
    return tables


def valid_icd10pcs(shared_data: Path, code: str) -> bool:
    """Whether ``code`` is a complete, valid ICD-10-PCS code of the FY2026 tables."""
    if len(code) != 7:
        return False
    return any(all(code[3 + i] in allowed[i] for i in range(4))
               for allowed in _pcs_rows(shared_data).get(code[:3], []))


@functools.cache
def hcpcs_codes(shared_data: Path) -> frozenset[str]:
    """HCPCS Level II codes of the CMS 2020 alpha-numeric file (the newest one here)."""
    with zipfile.ZipFile(shared_data / HCPCS_2020) as archive:
        text = archive.read("HCPC2020_ANWEB_w_disclaimer.txt").decode("latin-1")
    codes = set()
    for line in io.StringIO(text):
        code = line[:5]
        if len(code) == 5 and code[0].isalpha() and code[1:].isdigit():
            codes.add(code)
    return frozenset(codes)
