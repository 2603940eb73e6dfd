"""A tiny kopf operator for the emulator's kopf test (never shipped).

What it is for: proving that kopf runs against ``harness.apiserver`` the way it runs against a
real cluster — it adds its finalizer to a Widget, writes ``status`` through the status
subresource, follows ``generation`` with ``observedGeneration``, and releases the finalizer on
deletion. What it must never do: touch anything but widgets.harness.test objects.
"""
from __future__ import annotations

from typing import Any

import kopf

FINALIZER = 'harness.test/widget-finalizer'


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix='harness.test')
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix='harness.test', key='last-handled-configuration')
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 40


@kopf.on.create('harness.test', 'v1', 'widgets')
@kopf.on.update('harness.test', 'v1', 'widgets')
def reconcile(spec: kopf.Spec, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    patch.status['phase'] = 'Ready'
    patch.status['replicas'] = spec.get('replicas', 0)
    patch.status['observedGeneration'] = meta.get('generation')


@kopf.on.delete('harness.test', 'v1', 'widgets')
def release(**_: Any) -> None:
    """Deleting a widget needs no cleanup; the handler makes kopf hold its finalizer."""
