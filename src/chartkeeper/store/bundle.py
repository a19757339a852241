"""Batch and transaction Bundles: urn:uuid and conditional references, all-or-nothing writes."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.store.errors import InvalidRequest, InvalidResource, OutcomeIssue, StoreError
from chartkeeper.store.service import (
    PreparedResource,
    Store,
    Txn,
    WriteResult,
    new_id,
    now_instant,
    prepare_new,
)
from chartkeeper.store.service import validate_for_store as validate

Resource = dict[str, Any]
METHOD_ORDER = {"DELETE": 0, "POST": 1, "EXISTING": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
ETAG = re.compile(r'^(?:W/)?"?(\d+)"?$')


def parse_etag(value: str | None) -> int | None:
    """The version number in an ETag/If-Match value like ``W/"3"``; None when absent."""
    if value is None or value == "":
        return None
    match = ETAG.match(value.strip())
    if not match or not match.group(1).isascii() or int(match.group(1)) > 2**31 - 1:
        raise InvalidRequest(f"If-Match value '{value[:40]}' is not an ETag like W/\"3\"")
    return int(match.group(1))


@dataclass
class EntryRequest:
    index: int
    method: str
    url: str
    resource: Resource | None
    full_url: str | None
    if_match: int | None
    if_none_exist: str | None
    if_none_match: str | None


def _entry_requests(bundle: Any) -> tuple[str, list[EntryRequest]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidRequest("A batch or transaction must be a Bundle resource")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest(f"Bundle.type must be 'batch' or 'transaction', got '{kind}'")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest("Bundle.entry must be an array")
    requests: list[EntryRequest] = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"{where} must be an object")
        request = entry.get("request")
        if not isinstance(request, dict):
            raise InvalidRequest(f"{where}.request is required in a {kind}",
                                 [OutcomeIssue("required", "request is missing",
                                               f"{where}.request")])
        method = request.get("method")
        url = request.get("url")
        if not isinstance(method, str) or method not in METHOD_ORDER or \
                not isinstance(url, str) or not url:
            raise InvalidRequest(
                f"{where}.request needs a method (GET, POST, PUT, DELETE) and a url",
                [OutcomeIssue("required", f"method={method!r} url={url!r}", f"{where}.request")],
            )
        resource = entry.get("resource")
        if method in ("POST", "PUT") and not isinstance(resource, dict):
            raise InvalidRequest(f"{where} ({method}) has no resource",
                                 [OutcomeIssue("required", "resource is missing",
                                               f"{where}.resource")])
        if method == "PATCH":
            raise InvalidRequest(f"{where}: PATCH is not supported")
        for header in ("ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"):
            if request.get(header) is not None and not isinstance(request.get(header), str):
                raise InvalidRequest(f"{where}.request.{header} must be a string")
        try:
            if_match = parse_etag(request.get("ifMatch"))
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc.diagnostics}") from exc
        requests.append(EntryRequest(
            i, method, url.lstrip("/"), resource, entry.get("fullUrl"), if_match,
            request.get("ifNoneExist"), request.get("ifNoneMatch"),
        ))
    return kind, requests


def _walk_references(node: Any, rewrite: Callable[[str], str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = rewrite(value)
            else:
                _walk_references(value, rewrite)
    elif isinstance(node, list):
        for item in node:
            _walk_references(item, rewrite)


def _split_url(url: str) -> tuple[str, str | None, str | None]:
    """(type, id, query) of an entry URL like ``Patient/1`` or ``Patient?identifier=x``."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    segments = path.split("/") if path else []
    if not segments:
        raise InvalidRequest(f"Entry url '{url}' names no resource type")
    rtype = segments[0]
    rid = segments[1] if len(segments) > 1 else None
    return rtype, rid, parts.query or None


def _response(result: WriteResult, status: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status}
    if result.version_id:
        response["location"] = result.location
        response["etag"] = f'W/"{result.version_id}"'
        response["lastModified"] = result.last_updated
    return {"response": response, **({"resource": result.resource} if result.resource else {})}


def _entry_error(where: str, exc: StoreError) -> StoreError:
    issues = [
        OutcomeIssue(i.code, i.diagnostics,
                     f"{where}.resource.{i.expression}" if i.expression else where, i.severity)
        for i in exc.issues
    ]
    wrapped = copy.copy(exc)  # same class and status, whatever its constructor takes
    wrapped.diagnostics = f"{where}: {exc.diagnostics}"
    wrapped.issues = issues
    wrapped.args = (wrapped.diagnostics,)
    return wrapped


def _check_unique_full_urls(requests: list[EntryRequest]) -> None:
    full_urls = [r.full_url for r in requests if r.full_url]
    if len(full_urls) != len(set(full_urls)):
        raise InvalidRequest("Two entries of the transaction share a fullUrl")


def _entry_type(req: EntryRequest) -> str:
    """The resourceType of a POST entry's resource, refused when it is not an R4 type."""
    assert req.resource is not None
    rtype = req.resource.get("resourceType")
    if not isinstance(rtype, str) or rtype not in load_definitions().resource_types:
        raise InvalidResource(
            f"Bundle.entry[{req.index}].resource has unknown resourceType '{rtype}'",
            [OutcomeIssue("structure", f"Unknown resourceType '{rtype}'",
                          f"Bundle.entry[{req.index}].resource.resourceType")])
    return rtype


def _give_new_id(req: EntryRequest, rtype: str, id_map: dict[str, str]) -> None:
    """Assign a POST entry its server id and map its fullUrl to ``Type/id``."""
    assert req.resource is not None
    req.resource = dict(req.resource, id=new_id())
    if req.full_url:
        id_map[req.full_url] = f"{rtype}/{req.resource['id']}"


def _validated_create(req: EntryRequest) -> Resource:
    """A POST entry's resource, validated; errors name the entry."""
    assert req.resource is not None
    try:
        if req.url.split("?")[0].strip("/") != req.resource.get("resourceType"):
            raise InvalidRequest(
                f"url '{req.url}' does not match resourceType "
                f"'{req.resource.get('resourceType')}'")
        return validate(req.resource, None)
    except StoreError as exc:
        raise _entry_error(f"Bundle.entry[{req.index}]", exc) from exc


WriteCheck = Callable[[Txn, str, str, str | None, str | None, Resource | None], None]


class BundleProcessor:
    """Runs batch and transaction Bundles against the store."""

    def __init__(self, store: Store, search_entry: Callable[[Txn, str, str], dict[str, Any]],
                 check_write: WriteCheck | None = None,
                 before_commit: Callable[[Txn, list[dict[str, Any]]], None] | None = None
                 ) -> None:
        self.store = store
        # Runs a GET entry (read or search) and returns its response entry; given by the API
        # so that searches in a bundle return the same Bundle the REST search would.
        self.search_entry = search_entry
        # Called before each write entry runs, inside its transaction, with (txn, method,
        # type, id, search criteria, new resource): the API's authorization raises there.
        self.check_write = check_write
        # Called at the end of a transaction Bundle, inside it, with the response entries
        # (the API appends its audit entry there, so the changes and their entry commit
        # together; an importer adds the Provenance of what the Bundle wrote).
        self.before_commit = before_commit

    def _check(self, txn: Txn, method: str, rtype: str, rid: str | None, query: str | None,
               resource: Resource | None) -> None:
        if self.check_write is not None:
            self.check_write(txn, method, rtype, rid, query, resource)

    def process(self, bundle: Any) -> Resource:
        kind, requests = _entry_requests(bundle)
        if kind == "transaction":
            return self._transaction(requests)
        return self._batch(requests)

    # --------------------------------------------------------------- transaction
    def _transaction(self, requests: list[EntryRequest]) -> Resource:
        _check_unique_full_urls(requests)
        responses: dict[int, dict[str, Any]] = {}
        with self.store.write() as txn:
            id_map = self._assign_ids(txn, requests)
            conditional_cache: dict[str, str] = {}

            def rewrite(ref: str) -> str:
                if ref in id_map:
                    return id_map[ref]
                if "?" in ref and not ref.startswith(("http://", "https://")):
                    return self._resolve_conditional_reference(txn, ref, conditional_cache)
                return ref

            for req in requests:
                if req.resource is not None:
                    _walk_references(req.resource, rewrite)
            ordered = sorted(requests, key=lambda r: (METHOD_ORDER[r.method], r.index))
            creates = [r for r in ordered if r.method == "POST"]
            for req in ordered:
                where = f"Bundle.entry[{req.index}]"
                try:
                    if req.method == "POST":
                        if req is creates[0]:
                            self._create_all(txn, creates, responses)
                        continue
                    responses[req.index] = self._run_entry(txn, req, id_map)
                except StoreError as exc:
                    raise _entry_error(where, exc) from exc
            entries = [responses[i] for i in sorted(responses)]
            if self.before_commit is not None:
                self.before_commit(txn, entries)
        return {"resourceType": "Bundle", "id": new_id(), "type": "transaction-response",
                "entry": entries}

    def _create_all(self, txn: Txn, creates: list[EntryRequest],
                    responses: dict[int, dict[str, Any]]) -> None:
        """Validate every POST entry (naming the one at fault), then insert them in bulk."""
        resources = [_validated_create(req) for req in creates]
        for resource in resources:
            self._check(txn, "POST", resource["resourceType"], None, None, resource)
        for req, result in zip(creates, txn.create_many(resources), strict=True):
            responses[req.index] = _response(result, "201 Created")

    def _assign_ids(self, txn: Txn, requests: list[EntryRequest]) -> dict[str, str]:
        """Map each POST entry's fullUrl to the Type/id it will get (or already has)."""
        id_map: dict[str, str] = {}
        for req in requests:
            if req.method != "POST" or req.resource is None:
                continue
            rtype = _entry_type(req)
            if req.if_none_exist:
                matches = txn.match(rtype, req.if_none_exist)
                if len(matches) > 1:
                    raise InvalidRequest(
                        f"Bundle.entry[{req.index}]: ifNoneExist '{req.if_none_exist}' matched "
                        f"{len(matches)} resources"
                    )
                if matches:
                    assigned = matches[0]["id"]
                    req.resource = None  # nothing to create; the entry reports 200
                    req.url = f"{rtype}/{assigned}"
                    req.method = "EXISTING"
                    if req.full_url:
                        id_map[req.full_url] = f"{rtype}/{assigned}"
                    continue
            _give_new_id(req, rtype, id_map)
        return id_map

    def _resolve_conditional_reference(self, txn: Txn, ref: str, cache: dict[str, str]) -> str:
        if ref in cache:
            return cache[ref]
        rtype, _, criteria = ref.partition("?")
        if rtype not in load_definitions().resource_types:
            raise InvalidRequest(f"Conditional reference '{ref}' names an unknown type")
        matches = txn.match(rtype, criteria)
        if len(matches) != 1:
            raise InvalidRequest(
                f"Conditional reference '{ref}' matched {len(matches)} resources (needs exactly 1)"
            )
        cache[ref] = f"{rtype}/{matches[0]['id']}"
        return cache[ref]

    def _run_entry(self, txn: Txn, req: EntryRequest, id_map: dict[str, str]) -> dict[str, Any]:
        if req.method == "EXISTING":
            rtype, rid, _ = _split_url(req.url)
            assert rid is not None
            current = txn.read(rtype, rid)
            return {"response": {"status": "200 OK",
                                 "location": f"{rtype}/{rid}/_history/"
                                             f"{current['meta']['versionId']}",
                                 "etag": f'W/"{current["meta"]["versionId"]}"'}}
        rtype, rid, query = _split_url(req.url)
        if req.method in ("POST", "PUT", "DELETE"):
            self._check(txn, req.method, rtype, rid, query, req.resource)
        if req.method == "POST":
            assert req.resource is not None
            if rtype != req.resource.get("resourceType"):
                raise InvalidRequest(
                    f"url '{req.url}' does not match resourceType "
                    f"'{req.resource.get('resourceType')}'"
                )
            result = txn.create(req.resource, resource_id=req.resource["id"])
            return _response(result, "201 Created")
        if req.method == "PUT":
            assert req.resource is not None
            if rid is None and query:
                result = txn.conditional_update(rtype, query, req.resource, req.if_match)
            elif rid is not None:
                result = txn.update(rtype, rid, req.resource, req.if_match)
            else:
                raise InvalidRequest(f"PUT url '{req.url}' needs an id or search criteria")
            return _response(result, "201 Created" if result.created else "200 OK")
        if req.method == "DELETE":
            if rid is None and query:
                results = txn.conditional_delete(rtype, query)
                return {"response": {"status": "204 No Content" if results else "404 Not Found"}}
            if rid is None:
                raise InvalidRequest(f"DELETE url '{req.url}' needs an id or search criteria")
            txn.delete(rtype, rid, req.if_match)
            return {"response": {"status": "204 No Content"}}
        # GET / HEAD
        return self.search_entry(txn, req.url, req.method)

    # --------------------------------------------------------------------- batch
    def _batch(self, requests: list[EntryRequest]) -> Resource:
        entries: list[dict[str, Any]] = []
        for req in requests:
            where = f"Bundle.entry[{req.index}]"
            try:
                with self.store.write() as txn:
                    if req.method == "POST" and req.resource is not None and req.if_none_exist:
                        self._check(txn, "POST", _entry_type(req), None, None, req.resource)
                        result = txn.conditional_create(req.resource, req.if_none_exist)
                        entries.append(_response(result, "200 OK" if result.unchanged
                                                 else "201 Created"))
                        continue
                    if req.method == "POST" and req.resource is not None:
                        req.resource = dict(req.resource, id=new_id())
                    entries.append(self._run_entry(txn, req, {}))
            except StoreError as exc:
                err = _entry_error(where, exc)
                entries.append({"response": {
                    "status": f"{exc.status}",
                    "outcome": operation_outcome(err.issues),
                }})
        return {"resourceType": "Bundle", "id": new_id(), "type": "batch-response",
                "entry": entries}


def operation_outcome(issues: list[OutcomeIssue]) -> Resource:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics,
             **({"expression": [i.expression]} if i.expression else {})}
            for i in issues
        ],
    }


class NeedsDatabase(Exception):
    """A bundle that cannot be prepared without the database (conditional entries or refs)."""


def prepare_transaction(bundle: Any) -> list[PreparedResource] | None:
    """Prepare a create-only transaction without the database, for pipelined imports.

    Works for transactions whose entries are all plain POSTs and whose references are
    ``urn:uuid`` fullUrls of the bundle or ordinary references (what Synthea and most bulk
    feeds send): ids are assigned, references rewritten, every entry validated and indexed.
    Returns None when the bundle needs the database (conditional creates or references, PUT,
    DELETE, GET, batches): the caller then runs it through ``BundleProcessor``. Raises the
    same errors, naming the entry, that ``BundleProcessor`` would.
    """
    kind, requests = _entry_requests(bundle)
    if kind != "transaction" or any(r.method != "POST" or r.if_none_exist for r in requests):
        return None
    _check_unique_full_urls(requests)
    id_map: dict[str, str] = {}
    for req in requests:
        _give_new_id(req, _entry_type(req), id_map)

    def rewrite(ref: str) -> str:
        if ref in id_map:
            return id_map[ref]
        if "?" in ref and not ref.startswith(("http://", "https://")):
            raise NeedsDatabase(ref)
        return ref

    try:
        for req in requests:
            _walk_references(req.resource, rewrite)
    except NeedsDatabase:
        return None
    last_updated = now_instant()
    return [prepare_new(_validated_create(req), last_updated) for req in requests]
