"""Over a real socket: simultaneous If-Match updates, and a third-party FHIR client."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
from fhirclient import client as fhirclient_client
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient as ClientPatient

from tests.api.conftest import LiveServer, fhir_client


def test_ten_simultaneous_puts_with_same_if_match_exactly_one_wins(
        live_server: LiveServer) -> None:
    with fhir_client(live_server.url, live_server.token) as http:
        created = http.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "male"})
        assert created.status_code == 201
        pid = created.json()["id"]

    barrier = threading.Barrier(10)
    statuses: list[int] = []
    lock = threading.Lock()

    def put(n: int) -> None:
        with fhir_client(live_server.url, live_server.token) as http:
            body = {"resourceType": "Patient", "id": pid, "gender": "female",
                    "name": [{"text": f"writer {n}"}]}
            barrier.wait()
            response = http.put(f"/fhir/Patient/{pid}", json=body,
                                headers={"If-Match": 'W/"1"'})
            with lock:
                statuses.append(response.status_code)

    threads = [threading.Thread(target=put, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(statuses) == Counter({200: 1, 412: 9})
    with fhir_client(live_server.url, live_server.token) as http:
        current = http.get(f"/fhir/Patient/{pid}").json()
        assert current["meta"]["versionId"] == "2"
        history = http.get(f"/fhir/Patient/{pid}/_history").json()
        assert history["total"] == 2


def test_fhirclient_package_create_read_search_update(live_server: LiveServer) -> None:
    smart = fhirclient_client.FHIRClient(settings={
        "app_id": "chartkeeper-test", "api_base": f"{live_server.url}/fhir"})
    server = smart.server
    server.session.headers["Authorization"] = f"Bearer {live_server.token}"

    patient = ClientPatient({"gender": "female", "birthDate": "1980-02-03"})
    name = HumanName()
    name.family = "Clientova"
    name.given = ["Ida"]
    patient.name = [name]
    created = patient.create(server)
    assert created is not None and created["resourceType"] == "Patient"
    pid = created["id"]

    read = ClientPatient.read(pid, server)
    assert read.name[0].family == "Clientova"
    assert read.birthDate.isostring == "1980-02-03"

    found = list(ClientPatient.where(struct={"family": "clientova"}).perform_resources_iter(
        server))
    assert [p.id for p in found] == [pid]

    read.gender = "other"
    updated = read.update(server)
    assert updated["meta"]["versionId"] == "2"
    assert ClientPatient.read(pid, server).gender == "other"

    with httpx.Client(base_url=live_server.url) as http:
        capabilities = http.get("/fhir/metadata").json()
    assert capabilities["fhirVersion"] == "4.0.1"
