"""Install the workbench's browser library (htmx) from the npm registry at install time.

``python -m chartkeeper.web.assets [--if-missing]`` fetches ``htmx.org`` (pinned by version
and the registry's SHA-1) and copies its minified build to ``static/vendor/htmx.min.js``.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

from chartkeeper.npm import NpmError, npm_pack

HTMX_VERSION = "2.0.11"
HTMX_SHA1 = "a85363c4c5af94cd634df04c4b83d06dd0e91aa7"
HTMX_PATH = Path(__file__).with_name("static") / "vendor" / "htmx.min.js"


def install_htmx(target: Path = HTMX_PATH) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tarball = npm_pack("htmx.org", HTMX_VERSION, HTMX_SHA1, Path(tmp))
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/dist/htmx.min.js")
            if member is None:
                raise NpmError("htmx.org has no dist/htmx.min.js")
            data = member.read()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--if-missing", action="store_true", help="do nothing if installed")
    args = parser.parse_args(argv)
    if args.if_missing and HTMX_PATH.exists():
        return 0
    try:
        install_htmx()
    except NpmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"installed htmx {HTMX_VERSION} at {HTMX_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
