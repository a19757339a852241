"""The record store's public API: versioned create, read, update, delete, history and search."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import Engine, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Row

from chartkeeper.fhir import indexing, validation
from chartkeeper.fhir.definitions import load as load_definitions
from chartkeeper.store import schema
from chartkeeper.store.engine import WRITE_OPTION, make_engine
from chartkeeper.store.errors import (
    Conflict,
    Gone,
    InvalidRequest,
    InvalidResource,
    NotFound,
    OutcomeIssue,
    PreconditionFailed,
)
from chartkeeper.store.search import SearchPage, SearchQuery, parse_query, run_search

Resource = dict[str, Any]


def now_instant() -> str:
    """The current time as a FHIR instant with millisecond precision in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def dumps(resource: Resource) -> str:
    return orjson.dumps(resource).decode()


def loads(text: str) -> Resource:
    value = orjson.loads(text)
    assert isinstance(value, dict)
    return value


@dataclass
class WriteResult:
    """What a write did: the stored resource, its version, and whether it was newly created."""

    resource: Resource | None
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: str
    created: bool = False
    deleted: bool = False
    unchanged: bool = False  # conditional create that matched, or delete of nothing

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.resource_id}/_history/{self.version_id}"


@dataclass
class HistoryEntry:
    resource_type: str
    resource_id: str
    version_id: int
    last_updated: str
    method: str
    resource: Resource | None


MAX_VERSION_ID = 2**31 - 1  # the version column is a 4-byte integer


@dataclass
class HistoryPage:
    total: int
    entries: list[HistoryEntry] = field(default_factory=list)


def check_resource_type(resource_type: str) -> None:
    if resource_type not in load_definitions().resource_types:
        raise NotFound(f"Unknown resource type '{resource_type}'")


def validate_for_store(resource: Any, expected_type: str | None) -> Resource:
    if not isinstance(resource, dict):
        raise InvalidResource(f"A resource must be a JSON object, got {type(resource).__name__}")
    actual = resource.get("resourceType")
    if expected_type is not None and actual != expected_type:
        raise InvalidResource(
            f"resourceType '{actual}' does not match the type in the URL '{expected_type}'",
            [OutcomeIssue("invalid", f"Expected resourceType '{expected_type}', got '{actual}'",
                          "resourceType")],
        )
    issues = [i for i in validation.validate_resource(resource) if i.severity in ("error", "fatal")]
    if issues:
        raise InvalidResource(
            f"{len(issues)} problem(s) in {actual}: " + "; ".join(
                f"{i.expression}: {i.diagnostics}" for i in issues[:5]),
            [OutcomeIssue(i.code, i.diagnostics, i.expression, i.severity) for i in issues],
        )
    return resource


def _stamp(resource: Resource, resource_id: str, version_id: int, last_updated: str) -> Resource:
    stamped = dict(resource)
    stamped["id"] = resource_id
    meta = dict(stamped.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = last_updated
    stamped["meta"] = meta
    # resourceType first, then id and meta, the way FHIR servers usually print a resource.
    ordered: Resource = {"resourceType": stamped["resourceType"], "id": resource_id, "meta": meta}
    ordered.update((k, v) for k, v in stamped.items() if k not in ordered)
    return ordered


@dataclass(slots=True)
class Upserted:
    """What an upsert wrote: versioned references (``Type/id/_history/n``) of the resources
    it created and of those it changed (an identical resource is in neither)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PreparedResource:
    """A new resource ready to insert: stamped as version 1, serialized and indexed.

    Preparing is pure CPU work with no database, so importers do it in worker processes.
    """

    resource_type: str
    resource_id: str
    content: str
    rows: indexing.IndexRows
    last_updated: str


def prepare_stamped(stamped: Resource, last_updated: str) -> PreparedResource:
    return PreparedResource(stamped["resourceType"], stamped["id"], dumps(stamped),
                            indexing.extract(stamped), last_updated)


def prepare_new(resource: Resource, last_updated: str) -> PreparedResource:
    """Stamp a validated resource (which carries its new id) as version 1 and prepare it."""
    check_resource_type(resource["resourceType"])
    return prepare_stamped(_stamp(resource, resource["id"], 1, last_updated), last_updated)


class Txn:
    """One database transaction of the store. Every method runs inside it."""

    def __init__(self, conn: Connection, store: Store) -> None:
        self.conn = conn
        self.store = store

    # ----------------------------------------------------------------- reading
    def _current_row(self, resource_type: str, resource_id: str, for_update: bool = False
                     ) -> Row[Any] | None:
        stmt = select(schema.resource).where(
            schema.resource.c.resource_type == resource_type,
            schema.resource.c.resource_id == resource_id,
        )
        if for_update and self.store.dialect == "postgresql":
            stmt = stmt.with_for_update()
        return self.conn.execute(stmt).first()

    def read(self, resource_type: str, resource_id: str) -> Resource:
        check_resource_type(resource_type)
        row = self._current_row(resource_type, resource_id)
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if row.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted (version {row.version_id})")
        return loads(row.content)

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> Resource:
        check_resource_type(resource_type)
        if not version_id.isascii() or not version_id.isdigit() or \
                int(version_id) > MAX_VERSION_ID:
            raise NotFound(f"{resource_type}/{resource_id} has no version '{version_id[:40]}'")
        row = self.conn.execute(
            select(schema.resource_version).where(
                schema.resource_version.c.resource_type == resource_type,
                schema.resource_version.c.resource_id == resource_id,
                schema.resource_version.c.version_id == int(version_id),
            )
        ).first()
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}")
        if row.deleted:
            raise Gone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
        return loads(row.content)

    def search(self, resource_type: str | None, query: SearchQuery) -> SearchPage:
        if resource_type is not None:
            check_resource_type(resource_type)
        return run_search(self.conn, resource_type, query)

    def search_params(self, resource_type: str, params: Sequence[tuple[str, str]]) -> SearchPage:
        return self.search(resource_type, parse_query(resource_type, params))

    def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        since: str | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> HistoryPage:
        v = schema.resource_version
        conditions = []
        if resource_type is not None:
            check_resource_type(resource_type)
            conditions.append(v.c.resource_type == resource_type)
        if resource_id is not None:
            conditions.append(v.c.resource_id == resource_id)
        if since is not None:
            conditions.append(v.c.last_updated >= normalize_instant(since))
        total = self.conn.execute(select(func.count()).select_from(v).where(*conditions)).scalar()
        if resource_id is not None and not total:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        rows = self.conn.execute(
            select(v).where(*conditions)
            .order_by(v.c.last_updated.desc(), v.c.version_id.desc(), v.c.resource_pk.desc())
            .limit(count).offset(offset)
        ).all()
        return HistoryPage(
            total=int(total or 0),
            entries=[
                HistoryEntry(r.resource_type, r.resource_id, r.version_id, r.last_updated,
                             r.method, loads(r.content) if r.content else None)
                for r in rows
            ],
        )

    # ----------------------------------------------------------------- writing
    def create(self, resource: Any, *, resource_id: str | None = None,
               validated: bool = False) -> WriteResult:
        """Create a new resource with a server-assigned id (a client id is ignored)."""
        resource = resource if validated else validate_for_store(resource, None)
        check_resource_type(resource["resourceType"])
        return self._insert_new(resource, resource_id or new_id())

    def conditional_create(self, resource: Any, criteria: str) -> WriteResult:
        """Create unless a resource matches ``criteria`` (If-None-Exist)."""
        resource = validate_for_store(resource, None)
        rtype = resource["resourceType"]
        matches = self.match(rtype, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist '{criteria}' matched {len(matches)} {rtype} resources"
            )
        if matches:
            existing = matches[0]
            return WriteResult(existing, rtype, existing["id"],
                               int(existing["meta"]["versionId"]),
                               existing["meta"]["lastUpdated"], unchanged=True)
        return self._insert_new(resource, new_id())

    def update(self, resource_type: str, resource_id: str, resource: Any,
               if_match: int | None = None) -> WriteResult:
        """Update (or create on update) ``resource_type/resource_id``."""
        check_resource_type(resource_type)
        resource = validate_for_store(resource, resource_type)
        body_id = resource.get("id")
        if body_id is None:
            raise InvalidRequest("An update must carry the resource's id in the body")
        if body_id != resource_id:
            raise InvalidRequest(
                f"The id in the body '{body_id}' does not match the id in the URL '{resource_id}'"
            )
        row = self._current_row(resource_type, resource_id, for_update=True)
        if row is None:
            if if_match is not None:
                raise PreconditionFailed(
                    f"If-Match version {if_match} given but {resource_type}/{resource_id} "
                    "does not exist"
                )
            return self._insert_new(resource, resource_id)
        if if_match is not None and if_match != row.version_id:
            raise PreconditionFailed(
                f"If-Match version {if_match} does not match the current version "
                f"{row.version_id} of {resource_type}/{resource_id}"
            )
        return self._write_version(row, resource, "PUT")

    def conditional_update(self, resource_type: str, criteria: str, resource: Any,
                           if_match: int | None = None) -> WriteResult:
        resource = validate_for_store(resource, resource_type)
        matches = self.match(resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"Conditional update '{criteria}' matched {len(matches)} {resource_type} resources"
            )
        if not matches:
            if "id" in resource:
                return self.update(resource_type, resource["id"], resource, if_match)
            return self._insert_new(resource, new_id())
        existing_id = matches[0]["id"]
        if resource.get("id", existing_id) != existing_id:
            raise InvalidRequest(
                f"The id in the body '{resource['id']}' does not match the resource "
                f"'{existing_id}' that the criteria matched"
            )
        resource = dict(resource, id=existing_id)
        return self.update(resource_type, existing_id, resource, if_match)

    def delete(self, resource_type: str, resource_id: str,
               if_match: int | None = None) -> WriteResult:
        check_resource_type(resource_type)
        row = self._current_row(resource_type, resource_id, for_update=True)
        if row is None or row.deleted:
            return WriteResult(None, resource_type, resource_id,
                               row.version_id if row is not None else 0,
                               row.last_updated if row is not None else now_instant(),
                               deleted=True, unchanged=True)
        if if_match is not None and if_match != row.version_id:
            raise PreconditionFailed(
                f"If-Match version {if_match} does not match the current version "
                f"{row.version_id} of {resource_type}/{resource_id}"
            )
        return self._write_version(row, None, "DELETE")

    def conditional_delete(self, resource_type: str, criteria: str) -> list[WriteResult]:
        matches = self.match(resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"Conditional delete '{criteria}' matched {len(matches)} {resource_type} resources"
            )
        return [self.delete(resource_type, m["id"]) for m in matches]

    def match(self, resource_type: str, criteria: str) -> list[Resource]:
        """Resources of ``resource_type`` matching a query string (conditional operations)."""
        params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        if not params:
            raise InvalidRequest(f"Conditional criteria '{criteria}' has no search parameters")
        query = parse_query(resource_type, params)
        query.count = 2
        page = self.search(resource_type, query)
        return page.matches

    # ----------------------------------------------------------------- internals
    def _insert_new(self, resource: Resource, resource_id: str) -> WriteResult:
        last_updated = now_instant()
        stamped = _stamp(resource, resource_id, 1, last_updated)
        rows = indexing.extract(stamped)
        rtype = stamped["resourceType"]
        existing = self._current_row(rtype, resource_id)
        if existing is not None:
            raise Conflict(f"{rtype}/{resource_id} already exists")
        self.insert_prepared([PreparedResource(rtype, resource_id, dumps(stamped), rows,
                                               last_updated)])
        return WriteResult(stamped, rtype, resource_id, 1, last_updated, created=True)

    def _write_version(self, row: Row[Any], resource: Resource | None, method: str
                       ) -> WriteResult:
        if resource is not None and not row.deleted and row.content is not None:
            current = loads(row.content)
            if _without_version(current) == _without_version(resource):
                # The same content again (a re-import, a resend): no new version, as HAPI
                # FHIR does for a no-op update.
                meta = current.get("meta") or {}
                return WriteResult(current, row.resource_type, row.resource_id,
                                   row.version_id, str(meta.get("lastUpdated", "")),
                                   unchanged=True)
        version_id = row.version_id + 1
        last_updated = now_instant()
        stamped = _stamp(resource, row.resource_id, version_id, last_updated) \
            if resource is not None else None
        content = dumps(stamped) if stamped is not None else None
        result = self.conn.execute(
            update(schema.resource)
            .where(schema.resource.c.pk == row.pk,
                   schema.resource.c.version_id == row.version_id)
            .values(version_id=version_id, last_updated=last_updated,
                    deleted=stamped is None, content=content if content is not None
                    else row.content)
        )
        if result.rowcount != 1:
            raise PreconditionFailed(
                f"{row.resource_type}/{row.resource_id} was changed by another request "
                f"(expected version {row.version_id})"
            )
        self.conn.execute(insert(schema.resource_version), {
            "resource_pk": row.pk, "version_id": version_id, "resource_type": row.resource_type,
            "resource_id": row.resource_id, "last_updated": last_updated, "method": method,
            "deleted": stamped is None, "content": content,
        })
        self._delete_index_rows([row.pk])
        if stamped is not None:
            self._insert_index_rows([(row.pk, row.resource_type, indexing.extract(stamped))])
        return WriteResult(stamped, row.resource_type, row.resource_id, version_id, last_updated,
                           created=False, deleted=stamped is None)

    def _delete_index_rows(self, pks: list[int]) -> None:
        for table in schema.INDEX_TABLES.values():
            self.conn.execute(delete(table).where(table.c.resource_pk.in_(pks)))

    def _raw_insert(self, table: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
                    ) -> None:
        """executemany straight to the driver: the write path's hot loop, no per-row dicts."""
        if not rows:
            return
        marker = "?" if self.store.dialect == "sqlite" else "%s"
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
               f"VALUES ({', '.join([marker] * len(columns))})")
        self.conn.exec_driver_sql(sql, rows)

    def _allocate_pks(self, count: int) -> list[int]:
        """Reserve ``count`` new resource primary keys inside this write transaction."""
        if self.store.dialect == "sqlite":
            # The writer holds SQLite's write lock from BEGIN IMMEDIATE: max(pk) is stable.
            top = self.conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM resource").scalar()
            start = int(top or 0) + 1
            return list(range(start, start + count))
        result = self.conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence('resource', 'pk')) "
            "FROM generate_series(1, %s)", (count,))
        return [int(v) for v in result.scalars()]

    def _insert_index_rows(self, items: Iterable[tuple[int, str, indexing.IndexRows]]) -> None:
        batches: dict[str, list[tuple[Any, ...]]] = {name: [] for name in schema.INDEX_TABLES}
        fields = [(name, attr) for name, (attr, _cols) in schema.INDEX_ROW_COLUMNS.items()]
        for pk, rtype, rows in items:
            for name, attr in fields:
                values = getattr(rows, attr)
                if values:
                    # _id is answered from resource.resource_id; its token rows would be waste.
                    batches[name].extend((pk, rtype, *v) for v in values if v[0] != "_id")
        for name, records in batches.items():
            columns = ("resource_pk", "resource_type", *schema.INDEX_ROW_COLUMNS[name][1])
            self._raw_insert(schema.INDEX_TABLES[name], columns, records)

    def create_many(self, resources: list[Resource]) -> list[WriteResult]:
        """Create validated resources whose ids the server just assigned, in one bulk insert.

        Used by transactions and importers: a few statements for the whole batch instead of
        several per resource. Ids must be new (fresh UUIDs); a clash fails the transaction.
        """
        last_updated = now_instant()
        for res in resources:
            check_resource_type(res["resourceType"])
        stamped = [_stamp(res, res["id"], 1, last_updated) for res in resources]
        self.insert_prepared([prepare_stamped(s, last_updated) for s in stamped])
        return [WriteResult(s, s["resourceType"], s["id"], 1, last_updated, created=True)
                for s in stamped]

    def insert_prepared(self, prepared: list[PreparedResource]) -> None:
        """Insert new resources prepared (validated, serialized, indexed) possibly elsewhere."""
        if not prepared:
            return
        pks = self._allocate_pks(len(prepared))
        self._raw_insert(
            schema.resource,
            ("pk", "resource_type", "resource_id", "version_id", "last_updated", "deleted",
             "content"),
            [(pk, p.resource_type, p.resource_id, 1, p.last_updated, False, p.content)
             for pk, p in zip(pks, prepared, strict=True)],
        )
        self._raw_insert(
            schema.resource_version,
            ("resource_pk", "version_id", "resource_type", "resource_id", "last_updated",
             "method", "deleted", "content"),
            [(pk, 1, p.resource_type, p.resource_id, p.last_updated, "POST", False, p.content)
             for pk, p in zip(pks, prepared, strict=True)],
        )
        self._insert_index_rows(
            (pk, p.resource_type, p.rows) for pk, p in zip(pks, prepared, strict=True)
        )

    def bulk_upsert(self, resources: list[Resource]) -> Upserted:
        """Store already-validated resources that carry ids: new ones in bulk, others updated.

        Used by importers for throughput; the same rules as ``update`` apply (a new version
        for an existing id, none when the content is the same).
        """
        last_updated = now_instant()
        return self.upsert_prepared([prepare_new(res, last_updated) for res in resources])

    def upsert_prepared(self, prepared: list[PreparedResource]) -> Upserted:
        """Insert prepared resources; those whose id already exists get a new version."""
        done = Upserted()
        if not prepared:
            return done
        r = schema.resource
        keys: dict[tuple[str, str], PreparedResource] = {}
        for item in prepared:
            keys[(item.resource_type, item.resource_id)] = item  # last one in a batch wins
        existing: dict[tuple[str, str], Any] = {}
        by_type: dict[str, list[str]] = {}
        for rtype, rid in keys:
            by_type.setdefault(rtype, []).append(rid)
        for rtype, ids in by_type.items():
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                for row in self.conn.execute(
                    select(r.c.pk, r.c.resource_type, r.c.resource_id, r.c.version_id,
                           r.c.deleted, r.c.content)
                    .where(r.c.resource_type == rtype, r.c.resource_id.in_(chunk))
                ):
                    existing[(rtype, row.resource_id)] = row
        new_items: list[PreparedResource] = []
        for key, item in keys.items():
            current = existing.get(key)
            if current is not None:
                result = self._write_version(current, loads(item.content), "PUT")
                if not result.unchanged:
                    done.updated.append(result.location)
            else:
                new_items.append(item)
        self.insert_prepared(new_items)
        done.created.extend(f"{p.resource_type}/{p.resource_id}/_history/1" for p in new_items)
        return done


def _without_version(resource: Resource) -> Resource:
    """The resource less what the store stamps on it (meta.versionId, meta.lastUpdated)."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if rest:
        out["meta"] = rest
    return out


def normalize_instant(value: str) -> str:
    """Turn a FHIR instant/dateTime into the stored UTC text form for comparisons."""
    try:
        low, _high = indexing.date_range(value)
    except ValueError as exc:
        raise InvalidRequest(f"'{value}' is not a valid FHIR instant or date: {exc}") from exc
    moment = datetime.fromtimestamp(low / 1_000_000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """The record store over one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.dialect = self.engine.dialect.name

    def create_schema(self) -> None:
        schema.metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction: commits on success, rolls back entirely on any exception."""
        with self.engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
            with conn.begin():
                yield Txn(conn, self)

    @contextmanager
    def read(self) -> Iterator[Txn]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield Txn(conn, self)

    def row_counts(self) -> dict[str, int]:
        """Rows in every table: tests use it to prove a refused request changed nothing."""
        with self.engine.connect() as conn:
            return {
                table.name: int(conn.execute(select(func.count()).select_from(table)).scalar()
                                or 0)
                for table in schema.metadata.sorted_tables
            }

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(schema.resource.c.pk).limit(1)).first() is None


def compartment_members(resource_type: str) -> dict[str, list[str]]:
    """For a compartment (``Patient``): resource type -> the parameters that place it there."""
    return {
        rtype: params
        for rtype, params in load_definitions().compartments.get(resource_type, {}).items()
        if params
    }


def provenance_of(txn: Txn, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str],
                                                                     list[Resource]]:
    """The Provenances whose ``target`` names each (type, id): where each record came from."""
    ref = schema.idx_reference
    res = schema.resource
    wanted = sorted(set(keys))
    targets: dict[int, list[tuple[str, str]]] = {}
    for start in range(0, len(wanted), 500):
        for row in txn.conn.execute(
            select(ref.c.resource_pk, ref.c.target_type, ref.c.target_id)
            .where(ref.c.resource_type == "Provenance", ref.c.param == "target",
                   tuple_(ref.c.target_type, ref.c.target_id).in_(wanted[start:start + 500]))
        ):
            targets.setdefault(row.resource_pk, []).append((row.target_type, row.target_id))
    found: dict[tuple[str, str], list[Resource]] = {}
    pks = sorted(targets)
    for start in range(0, len(pks), 500):  # each Provenance read once, however many targets
        for pk, content in txn.conn.execute(select(res.c.pk, res.c.content).where(
                res.c.pk.in_(pks[start:start + 500]), res.c.deleted.is_(False))):
            provenance = loads(content)
            for key in targets[pk]:
                found.setdefault(key, []).append(provenance)
    return found


def search_all(txn: Txn, resource_type: str, params: Sequence[tuple[str, str]]
               ) -> list[Resource]:
    """Every current match of a search, read a page of 1,000 at a time."""
    found: list[Resource] = []
    while True:
        page = txn.search_params(resource_type, [*params, ("_count", "1000"),
                                                 ("_offset", str(len(found)))]).matches
        found += page
        if len(page) < 1000:
            return found


def referencing(txn: Txn, target_type: str, target_id: str) -> list[Resource]:
    """Every current resource that refers to ``target_type/target_id`` under any reference
    search parameter (its compartment and beyond), each once, in a stable order."""
    ref = schema.idx_reference
    res = schema.resource
    pks = sorted({pk for (pk,) in txn.conn.execute(
        select(ref.c.resource_pk).where(ref.c.target_type == target_type,
                                        ref.c.target_id == target_id).distinct())})
    found: list[Resource] = []
    for start in range(0, len(pks), 500):
        found += [loads(content) for (content,) in txn.conn.execute(
            select(res.c.content).where(res.c.pk.in_(pks[start:start + 500]),
                                        res.c.deleted.is_(False)).order_by(res.c.pk))]
    return found


def everything(txn: Txn, patient_id: str, types: list[str] | None = None,
               since: str | None = None) -> list[Resource]:
    """Patient/$everything: the patient, every resource in its compartment, and what they cite."""
    patient = txn.read("Patient", patient_id)
    members = compartment_members("Patient")
    ref = schema.idx_reference
    res = schema.resource
    # Index rows exist only for current, undeleted resources: the members come from the
    # reference index alone, then each one's content once (a resource citing the patient
    # under two parameters would otherwise be fetched twice).
    pks = sorted({row.resource_pk for row in txn.conn.execute(
        select(ref.c.resource_pk, ref.c.resource_type, ref.c.param)
        .where(ref.c.target_type == "Patient", ref.c.target_id == patient_id))
        if row.param in members.get(row.resource_type, [])})
    since_norm = normalize_instant(since) if since else None
    found: dict[tuple[str, str], Resource] = {("Patient", patient_id): patient}
    for start in range(0, len(pks), 500):
        for row in txn.conn.execute(
            select(res.c.resource_type, res.c.resource_id, res.c.content)
            .where(res.c.pk.in_(pks[start:start + 500]), res.c.deleted.is_(False))
        ):
            key = (row.resource_type, row.resource_id)
            if key not in found:
                found[key] = loads(row.content)
    # One level of referenced resources (practitioners, organizations, medications, locations).
    cited: set[tuple[str, str]] = set()
    for start in range(0, len(pks), 500):
        for target_type, target_id in txn.conn.execute(
            select(ref.c.target_type, ref.c.target_id).where(
                ref.c.resource_pk.in_(pks[start:start + 500]), ref.c.target_id.is_not(None),
                ref.c.target_type.is_not(None)).distinct()
        ):
            if (target_type, target_id) not in found:
                cited.add((target_type, target_id))
    cited_list = sorted(cited)
    for start in range(0, len(cited_list), 500):
        for cited_row in txn.conn.execute(
            select(res.c.resource_type, res.c.resource_id, res.c.content).where(
                tuple_(res.c.resource_type, res.c.resource_id).in_(cited_list[start:start + 500]),
                res.c.deleted.is_(False))
        ):
            found[(cited_row.resource_type, cited_row.resource_id)] = loads(cited_row.content)
    result = list(found.values())
    if types:
        result = [r for r in result if r["resourceType"] in types]
    if since_norm:
        result = [r for r in result if r["meta"]["lastUpdated"] >= since_norm]
    return result
