"""De-identified extracts over the API: Safe Harbor copies of named patients' records.

Analysts and privacy officers get research extracts without PHI. Up to ``MAX_PATIENTS``
patients per request, answered as NDJSON; a whole population is the operators' job
(``chartkeeper deid export``). Sensitive records (42 CFR Part 2, behavioural health,
restricted) and restricted patients' charts are never included: there is no break-the-glass
for a research copy.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from chartkeeper.api.auth import DEID_EXPORT, access_of
from chartkeeper.api.security_routes import read_fields
from chartkeeper.security.access import Capability, exportable
from chartkeeper.security.deid_cli import deid_key_path
from chartkeeper.security.identity import load_or_create_key
from chartkeeper.store.errors import Gone, InvalidRequest, NotFound
from chartkeeper.store.service import everything

router = APIRouter()
MAX_PATIENTS = 100
_lock = threading.Lock()


def _deidentifier(request: Request) -> Any:
    """One SafeHarborDeidentifier per app: building presidio's analyzer takes seconds."""
    with _lock:
        deid = getattr(request.app.state, "deidentifier", None)
        if deid is None:
            from chartkeeper.security.deid import SafeHarborDeidentifier

            key = load_or_create_key(deid_key_path(request.app.state.settings.home))
            deid = request.app.state.deidentifier = SafeHarborDeidentifier(key)
        return deid


@router.post("/him/deid-export", dependencies=[Depends(DEID_EXPORT)], tags=["him"])
async def deid_export(request: Request) -> Response:
    """``{"patients": ["id", ...]}`` -> the patients' records de-identified, as NDJSON."""
    access = access_of(request)
    access.require(Capability.deid_export)
    fields = await read_fields(request)
    patients = fields.get("patients")
    if not isinstance(patients, list) or not patients or not all(
            isinstance(p, str) and 0 < len(p) <= 64 for p in patients):
        raise InvalidRequest("'patients' must be a non-empty list of Patient ids")
    if len(patients) > MAX_PATIENTS:
        raise InvalidRequest(f"at most {MAX_PATIENTS} patients per request; use "
                             "'chartkeeper deid export' for a population")
    access.details["patientCount"] = len(patients)
    access.details["deidentified"] = True
    deid = await run_in_threadpool(_deidentifier, request)
    restricted = access.services.restricted_patients()
    store = request.app.state.store

    def run() -> tuple[bytes, int]:
        lines: list[bytes] = []
        withheld = 0
        seen: set[tuple[str, str]] = set()
        with store.read() as txn:
            for patient_id in dict.fromkeys(patients):
                if patient_id in restricted:
                    withheld += 1
                    continue
                try:
                    record = everything(txn, patient_id)
                except (NotFound, Gone):
                    raise InvalidRequest(f"Patient/{patient_id} is not in the store") from None
                kept = exportable(record, patient_id)
                withheld += len(record) - len(kept)
                for resource in deid.deidentify_patient(kept):
                    key = (resource["resourceType"], str(resource.get("id")))
                    if key in seen:
                        continue
                    seen.add(key)
                    lines.append(orjson.dumps(resource))
        return b"\n".join(lines) + b"\n", withheld
    body, withheld = await run_in_threadpool(run)
    access.patients.update(dict.fromkeys(patients))
    headers = {"X-Withheld-Restricted": str(withheld)} if withheld else {}
    return Response(body, media_type="application/fhir+ndjson", headers=headers)
