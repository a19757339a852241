"""Tables of the record store: current resources, every version, and the search index."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# BigInteger primary keys autoincrement on PostgreSQL; on SQLite they must be INTEGER.
PK = BigInteger().with_variant(Integer(), "sqlite")


def Key(length: int) -> String:  # noqa: N802 - reads like a column type
    """A searchable string: bytewise ordering on both databases, so prefix ranges use indexes."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")

resource = Table(
    "resource",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", Text, nullable=True),
    UniqueConstraint("resource_type", "resource_id", name="uq_resource_type_id"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("resource_pk", PK, ForeignKey("resource.pk"), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("last_updated", String(40), nullable=False),
    Column("method", String(8), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", Text, nullable=True),
    Index("ix_version_type_updated", "resource_type", "last_updated"),
    Index("ix_version_updated", "last_updated"),
)


def _index_table(name: str, *columns: Column[object], indexes: list[tuple[str, ...]]) -> Table:
    table = Table(
        name,
        metadata,
        Column("resource_pk", PK, ForeignKey("resource.pk"), nullable=False),
        Column("resource_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(f"ix_{name}_pk", "resource_pk"),
    )
    for i, cols in enumerate(indexes):
        Index(f"ix_{name}_{i}", *(table.c[c] for c in cols))
    return table


idx_string = _index_table(
    "idx_string",
    Column("value_norm", Key(255), nullable=False),
    Column("value_exact", Key(255), nullable=False),
    indexes=[("resource_type", "param", "value_norm")],
)
idx_token = _index_table(
    "idx_token",
    Column("system", Key(255)),
    Column("code", Key(255)),
    Column("text", Key(255)),
    indexes=[("resource_type", "param", "code", "system")],
)
idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),
    indexes=[("resource_type", "param", "low"), ("resource_type", "param", "high")],
)
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", Key(64)),
    Column("target_id", Key(64)),
    Column("url", Key(512)),
    indexes=[
        ("target_id", "target_type", "resource_type", "param"),
        ("resource_type", "param", "url"),
    ],
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", Key(255)),
    Column("code", Key(255)),
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=[("resource_type", "param", "code", "value")],
)
idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    indexes=[("resource_type", "param", "value")],
)
idx_uri = _index_table(
    "idx_uri",
    Column("uri", Key(512), nullable=False),
    indexes=[("resource_type", "param", "uri")],
)
idx_composite = _index_table(
    "idx_composite",
    Column("c1_system", Key(255)),
    Column("c1_code", Key(255)),
    Column("c2_system", Key(255)),
    Column("c2_code", Key(255)),
    Column("c2_low", Float),
    Column("c2_high", Float),
    Column("c2_text", Key(255)),
    indexes=[("resource_type", "param", "c1_code")],
)

INDEX_TABLES = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "reference": idx_reference,
    "quantity": idx_quantity,
    "number": idx_number,
    "uri": idx_uri,
    "composite": idx_composite,
}

# The field of fhir.indexing.IndexRows that fills each table, and the row tuple's columns.
INDEX_ROW_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "string": ("strings", ("param", "value_norm", "value_exact")),
    "token": ("tokens", ("param", "system", "code", "text")),
    "date": ("dates", ("param", "low", "high")),
    "reference": ("references", ("param", "target_type", "target_id", "url")),
    "quantity": ("quantities", ("param", "system", "code", "value", "low", "high")),
    "number": ("numbers", ("param", "value", "low", "high")),
    "uri": ("uris", ("param", "uri")),
    "composite": (
        "composites",
        ("param", "c1_system", "c1_code", "c2_system", "c2_code", "c2_low", "c2_high", "c2_text"),
    ),
}
