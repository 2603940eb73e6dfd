"""Reading agentgov manifests: YAML files or folders in, validated objects (or errors) out.

Files are read whole and parsed with PyYAML's safe loader; every document is validated
against the models. Problems are collected per document (never raised half-way) so a user
sees all of them in one run. Only reads files; never writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentgov.api.base import GROUP
from agentgov.api.resources import CustomResource, ManifestError, parse_object

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the API server refuses requests over ~3 MiB anyway
YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Loaded:
    """One document of a manifest file: the object, or what is wrong with it."""

    source: str
    obj: CustomResource[Any, Any] | None = None
    error: str | None = None
    # Set for objects of other API groups (a Namespace, a Secret): passed over, not an error.
    skipped: str | None = None
    # The skipped object itself (`agentgov check` reviews Deployments, Ingresses, Secrets...).
    document: dict[str, Any] | None = None


def manifest_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The YAML files named; a folder gives its own YAML files, sorted, not its subfolders
    (as `kubectl apply -f DIR` does without -R)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix in YAML_SUFFIXES and child.is_file() and not child.name.startswith("."):
                    yield child
        else:
            yield path


def parse_documents(text: str, source: str) -> list[Loaded]:
    """Parse and validate every document of one YAML text."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return [Loaded(source, error=f"{source}: not valid YAML{where}: {problem}")]
    loaded = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        label = source if len(documents) == 1 else f"{source}#{index + 1}"
        api_version = document.get("apiVersion") if isinstance(document, dict) else None
        if isinstance(api_version, str) and api_version.split("/")[0] != GROUP:
            meta = document.get("metadata")
            name = meta.get("name", "?") if isinstance(meta, dict) else "?"
            loaded.append(Loaded(label, skipped=f"{api_version} {document.get('kind')} {name}", document=document))
            continue
        try:
            loaded.append(Loaded(label, obj=parse_object(document, label)))
        except ManifestError as error:
            loaded.append(Loaded(label, error=str(error)))
    return loaded


def load_manifests(paths: Iterable[str | Path]) -> list[Loaded]:
    """Every document of every file named; unreadable files become errors, not exceptions."""
    results: list[Loaded] = []
    for path in manifest_files(paths):
        source = str(path)
        try:
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                results.append(Loaded(source, error=f"{source}: file is {size} bytes, over the {MAX_MANIFEST_BYTES} limit"))
                continue
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            results.append(Loaded(source, error=f"{source}: no such file or directory"))
            continue
        except (OSError, UnicodeDecodeError) as error:
            results.append(Loaded(source, error=f"{source}: cannot read: {error.__class__.__name__}"))
            continue
        results.extend(parse_documents(text, source))
    return results
