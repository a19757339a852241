"""Fetch a pinned npm package tarball with the ordinary npm client and check its digest.

Used at install time only (``make install``): the FHIR definitions and the workbench's
htmx come from the npm registry, pinned by version and by the registry's published SHA-1.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


class NpmError(RuntimeError):
    """The package could not be fetched or does not match what was expected."""


def npm_pack(name: str, version: str, sha1: str, dest_dir: Path) -> Path:
    """Download ``name@version`` with ``npm pack`` into ``dest_dir``; check its SHA-1."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    spec = f"{name}@{version}"
    try:
        completed = subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(dest_dir), "--silent"],
            check=True, capture_output=True, text=True,
        )
    except FileNotFoundError as exc:
        raise NpmError("npm is not installed; it is needed to fetch " + spec) from exc
    except subprocess.CalledProcessError as exc:
        raise NpmError(f"npm pack {spec} failed: {exc.stderr.strip()}") from exc
    tarball = dest_dir / completed.stdout.strip().splitlines()[-1]
    verify_sha1(tarball, sha1)
    return tarball


def verify_sha1(tarball: Path, sha1: str) -> None:
    digest = hashlib.sha1(tarball.read_bytes()).hexdigest()  # noqa: S324 - npm's published shasum
    if digest != sha1:
        raise NpmError(f"{tarball.name}: SHA-1 {digest} does not match the expected {sha1}")
