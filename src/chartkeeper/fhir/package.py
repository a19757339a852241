"""Fetch the official FHIR R4 definitions package from the npm registry and compile it.

The product needs the R4 StructureDefinitions, SearchParameters and CompartmentDefinitions
at run time. They come from the npm package ``hl7.fhir.r4.examples`` 4.0.1 (CC0), fetched
at install time with the ordinary npm client, checked against its published SHA-1, and
compiled into ``definitions/r4-core.json.gz`` beside this module.

Run as ``python -m chartkeeper.fhir.package [--from-tarball FILE]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from chartkeeper.npm import NpmError, npm_pack, verify_sha1

PACKAGE_NAME = "hl7.fhir.r4.examples"
PACKAGE_VERSION = "4.0.1"
PACKAGE_SHA1 = "537ea7db3f3c7b3575fe2eaa7808bad21261cca3"
COMPILED_PATH = Path(__file__).with_name("definitions") / "r4-core.json.gz"
# Bump when the compiled layout changes, so installs rebuild the file.
COMPILED_FORMAT = 2


PackageError = NpmError  # the definitions package could not be fetched or is not the one


def fetch_tarball(dest_dir: Path) -> Path:
    """Download the package tarball with ``npm pack`` and check its digest."""
    return npm_pack(PACKAGE_NAME, PACKAGE_VERSION, PACKAGE_SHA1, dest_dir)


def verify_tarball(tarball: Path) -> None:
    verify_sha1(tarball, PACKAGE_SHA1)


def _compact_search_parameter(sp: dict[str, Any]) -> dict[str, Any]:
    keep = ("url", "code", "base", "type", "expression", "target", "modifier", "comparator",
            "multipleOr", "multipleAnd", "xpathUsage", "description")
    out = {k: sp[k] for k in keep if k in sp}
    if "component" in sp:
        out["component"] = [
            {"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]
        ]
    return out


def _compact_structure_definition(sd: dict[str, Any]) -> dict[str, Any]:
    elements = []
    for el in sd.get("snapshot", {}).get("element", []):
        compact: dict[str, Any] = {"path": el["path"], "min": el.get("min", 0),
                                   "max": el.get("max", "*")}
        if "type" in el:
            compact["types"] = [
                {k: t[k] for k in ("code", "targetProfile") if k in t} for t in el["type"]
            ]
        if "contentReference" in el:
            compact["contentReference"] = el["contentReference"]
        if "sliceName" in el:
            compact["sliceName"] = el["sliceName"]
        if el.get("isSummary"):
            compact["summary"] = True
        elements.append(compact)
    return {
        "url": sd["url"],
        "name": sd["name"],
        "type": sd["type"],
        "kind": sd["kind"],
        "abstract": sd.get("abstract", False),
        "baseDefinition": sd.get("baseDefinition"),
        "derivation": sd.get("derivation"),
        "elements": elements,
    }


def compile_tarball(tarball: Path, out_path: Path = COMPILED_PATH) -> dict[str, int]:
    """Compile the definitions the store needs into one gzip'd JSON file."""
    verify_tarball(tarball)
    search_parameters: list[dict[str, Any]] = []
    structure_definitions: dict[str, dict[str, Any]] = {}
    compartments: dict[str, dict[str, list[str]]] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            base = member.name.rsplit("/", 1)[-1]
            prefix = base.split("-", 1)[0]
            if prefix not in ("SearchParameter", "StructureDefinition", "CompartmentDefinition"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            resource = json.load(handle)
            kind = resource.get("resourceType")
            if kind == "SearchParameter":
                search_parameters.append(_compact_search_parameter(resource))
            elif kind == "StructureDefinition":
                # Base types only: profiles (derivation=constraint) are not structural rules.
                if resource.get("derivation") == "constraint" or resource["kind"] == "logical":
                    continue
                structure_definitions[resource["type"]] = _compact_structure_definition(resource)
            elif kind == "CompartmentDefinition":
                compartments[resource["code"]] = {
                    r["code"]: list(r.get("param", [])) for r in resource.get("resource", [])
                }
    search_parameters.sort(key=lambda sp: sp["url"])
    compiled = {
        "format": COMPILED_FORMAT,
        "fhirVersion": PACKAGE_VERSION,
        "source": {"package": PACKAGE_NAME, "version": PACKAGE_VERSION, "sha1": PACKAGE_SHA1},
        "searchParameters": search_parameters,
        "structureDefinitions": dict(sorted(structure_definitions.items())),
        "compartments": compartments,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(compiled, separators=(",", ":"), sort_keys=True).encode()
    tmp = out_path.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", mtime=0) as gz:
        gz.write(payload)
    tmp.replace(out_path)
    return {
        "searchParameters": len(search_parameters),
        "structureDefinitions": len(structure_definitions),
        "compartments": len(compartments),
    }


def compiled_format() -> int | None:
    """The format number of the compiled file on disk, or None if there is none."""
    if not COMPILED_PATH.exists():
        return None
    with gzip.open(COMPILED_PATH, "rb") as fh:
        value = json.loads(fh.read()).get("format")
    return int(value) if value is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-tarball", type=Path, help="use this tarball instead of npm")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when the compiled file already exists")
    args = parser.parse_args(argv)
    if args.if_missing and compiled_format() == COMPILED_FORMAT:
        return 0
    try:
        if args.from_tarball:
            counts = compile_tarball(args.from_tarball)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                counts = compile_tarball(fetch_tarball(Path(tmp)))
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {PACKAGE_NAME}@{PACKAGE_VERSION} into {COMPILED_PATH}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
