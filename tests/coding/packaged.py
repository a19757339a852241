"""The packaged ICD-10-CM release and a suggestion engine over it, built once per process."""

from __future__ import annotations

from functools import cache

from chartkeeper.coding.cac import Coder
from chartkeeper.coding.codesets import PACKAGED_ICD10CM, packaged_icd10cm
from chartkeeper.coding.icd10cm import Tabular, parse_tabular
from chartkeeper.coding.service import coder_for


@cache
def packaged_tabular() -> Tabular:
    return parse_tabular(packaged_icd10cm(), source=PACKAGED_ICD10CM[1])


@cache
def packaged_coder() -> Coder:
    return coder_for(packaged_tabular())
