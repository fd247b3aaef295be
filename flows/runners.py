"""The task runner of the flows that fan out per warehouse: threads by default, a Dask cluster
(prefect-dask) when CANGFLOW_DASK_ADDRESS names its scheduler. Made when a run starts, so the
settings of the process that runs the flow decide."""

from __future__ import annotations

from prefect.task_runners import ThreadPoolTaskRunner

from warehouse.settings import get_settings


def task_runner():
    settings = get_settings()
    if settings.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    return ThreadPoolTaskRunner(max_workers=settings.task_threads)
