"""The Dask worker plugin that installs a run's setup on every worker of a cluster.

Kept apart from :mod:`pseudo.batch.pools` so that only runs that use Dask import ``distributed``.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from pseudo.batch.pools import Installer, WorkerSetup


class SetupPlugin(WorkerPlugin):
    """Installs one run's :class:`~pseudo.batch.pools.WorkerSetup` when a worker starts or joins,
    and removes it when the run unregisters the plugin."""

    def __init__(self, setup: WorkerSetup, install: Installer, remove: Installer) -> None:
        self.setup_data = setup
        self.install = install
        self.remove = remove

    def setup(self, worker: Any) -> None:
        """Install the run's keys and policy in this worker process."""
        self.install(self.setup_data)

    def teardown(self, worker: Any) -> None:
        """Forget them."""
        self.remove(self.setup_data)
