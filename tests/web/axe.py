"""axe-core (Deque's accessibility engine, npm ``axe-core``, MPL-2.0) for the workbench tests:
fetched once with npm into ``.cache/`` (pinned by version and the registry's SHA-1) and run
inside the page by Playwright."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from chartkeeper.npm import npm_pack

AXE_VERSION = "4.14.1"
AXE_SHA1 = "14d8a6f3f085afd126b8b5ca1e42e50e17fb1d99"
AXE_PATH = Path(__file__).resolve().parents[2] / ".cache" / f"axe-core-{AXE_VERSION}.min.js"
# WCAG 2.1 A and AA rules; a page fails on serious or critical violations.
AXE_RUN = """async () => {
  const result = await axe.run(document, {runOnly: {type: 'tag',
      values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}});
  return result.violations.filter(v => ['serious', 'critical'].includes(v.impact))
      .map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target)}));
}"""


def axe_source() -> str:
    if not AXE_PATH.exists():
        with tempfile.TemporaryDirectory() as tmp:
            tarball = npm_pack("axe-core", AXE_VERSION, AXE_SHA1, Path(tmp))
            with tarfile.open(tarball) as archive:
                member = archive.extractfile("package/axe.min.js")
                assert member is not None, "axe-core has no axe.min.js"
                data = member.read()
        AXE_PATH.parent.mkdir(parents=True, exist_ok=True)
        AXE_PATH.write_bytes(data)
    return AXE_PATH.read_text()


def violations(page: Any) -> list[dict[str, Any]]:
    """The serious and critical WCAG 2.1 AA violations of the page as it is now."""
    page.add_script_tag(content=axe_source())
    found: list[dict[str, Any]] = page.evaluate(AXE_RUN)
    return found
