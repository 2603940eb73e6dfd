"""Copy the generated CRDs (``crds/``) into the Helm chart and the kustomize base.

What it is for: Helm never upgrades the files of a chart's ``crds/`` folder, so the chart
carries the CRDs as *templates* (``charts/agentgov/templates/crds/``), gated by
``crds.enabled`` and kept on uninstall when ``crds.keep`` (as cert-manager's chart does). The
kustomize base cannot reference files outside its own folder, so it carries byte-identical
copies (``manifests/base/crds/``). Both are derived from ``crds/`` by this script and nothing
else; ``--check`` fails when either is out of date (``make check-chart-crds``; the tests run
the same check).

What it must never do: change ``spec`` — the chart's template holds the ``spec:`` block of the
generated file verbatim, only ``metadata`` is templated (labels and the keep annotation).

    python charts/sync_crds.py           # rewrite the copies
    python charts/sync_crds.py --check   # exit 1 naming each stale or extra copy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIR = REPO / "crds"
CHART_CRD_DIR = REPO / "charts" / "agentgov" / "templates" / "crds"
KUSTOMIZE_CRD_DIR = REPO / "manifests" / "base" / "crds"
# Files in the target folders that are not copies of crds/ (kopf's peering CRDs, the
# kustomization) and so are neither written nor reported as extra.
OWN_FILES = frozenset({"kopf-peerings.yaml", "kustomization.yaml"})


class SourceError(ValueError):
    """A file in crds/ that is not shaped as `agentgov crds generate` writes them."""


def chart_template(source: str, filename: str) -> str:
    """The Helm template for one generated CRD file: its ``spec:`` block verbatim, under a
    templated ``metadata`` (chart labels, ``helm.sh/resource-policy: keep`` when crds.keep)."""
    document = yaml.safe_load(source)
    if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
        raise SourceError(f"{filename}: not a CustomResourceDefinition")
    name = (document.get("metadata") or {}).get("name")
    if not name:
        raise SourceError(f"{filename}: metadata.name is missing")
    lines = source.splitlines(keepends=True)
    try:
        start = lines.index("spec:\n")
    except ValueError:
        raise SourceError(f"{filename}: no top-level 'spec:' line") from None
    spec = "".join(lines[start:])
    if "{{" in spec or "}}" in spec:
        raise SourceError(f"{filename}: the spec holds '{{{{' or '}}}}', which Helm would read as a template")
    if yaml.safe_load(spec) != {"spec": document["spec"]} or set(document) != {"apiVersion", "kind", "metadata", "spec"}:
        raise SourceError(f"{filename}: the 'spec:' block is not the last top-level key")
    if not spec.endswith("\n"):
        spec += "\n"
    return (
        f"{{{{- /* Generated from crds/{filename} by `make chart-crds` (charts/sync_crds.py). Do not edit. */}}}}\n"
        "{{- if .Values.crds.enabled }}\n"
        f"apiVersion: {document['apiVersion']}\n"
        "kind: CustomResourceDefinition\n"
        "metadata:\n"
        f"  name: {name}\n"
        "  {{- if .Values.crds.keep }}\n"
        "  annotations:\n"
        "    helm.sh/resource-policy: keep\n"
        "  {{- end }}\n"
        "  labels:\n"
        '    {{- include "agentgov.crdLabels" . | nindent 4 }}\n'
        f"{spec}"
        "{{- end }}\n"
    )


def wanted_files() -> dict[Path, str]:
    """Every copy, by path, with the text it must hold."""
    wanted: dict[Path, str] = {}
    for source in sorted(SOURCE_DIR.glob("*.yaml")):
        text = source.read_text(encoding="utf-8")
        wanted[CHART_CRD_DIR / source.name] = chart_template(text, source.name)
        wanted[KUSTOMIZE_CRD_DIR / source.name] = text
    return wanted


def problems(wanted: dict[Path, str]) -> list[str]:
    """Stale, missing and extra copies, as messages naming the file."""
    found = []
    for path, text in wanted.items():
        if not path.is_file():
            found.append(f"{path.relative_to(REPO)}: missing; run `make chart-crds`")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{path.relative_to(REPO)}: differs from crds/{path.name}; run `make chart-crds`")
    for folder in (CHART_CRD_DIR, KUSTOMIZE_CRD_DIR):
        for path in sorted(folder.glob("*.yaml")):
            if path not in wanted and path.name not in OWN_FILES:
                found.append(f"{path.relative_to(REPO)}: not a copy of any file in crds/; remove it")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a copy is out of date; write nothing")
    args = parser.parse_args(argv)
    try:
        wanted = wanted_files()
    except SourceError as error:
        print(f"sync_crds: {error}", file=sys.stderr)
        return 2
    if args.check:
        found = problems(wanted)
        for message in found:
            print(message, file=sys.stderr)
        if not found:
            print(f"{len(wanted)} CRD copies up to date")
        return 1 if found else 0
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
