"""Past one machine: the nightly flow with its per-warehouse tasks (warmup, ERP-truth
adjustments) on a local Dask cluster of 2 worker processes, chosen by CANGFLOW_DASK_ADDRESS."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from tests.builders import World
from warehouse import stock

pytestmark = pytest.mark.integration


def test_the_nightly_flow_runs_its_per_warehouse_tasks_on_two_dask_workers(
    tasks_db, prefect_api, tmp_path, monkeypatch
):
    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL

    from flows.nightly import nightly_flow
    from warehouse.settings import get_settings

    worlds = [World.create(tasks_db, bins=1) for _ in range(2)]
    for world in worlds:
        world.stocked_sku(10)
    as_of = datetime.now(UTC).isoformat()
    rows = [f"{w.warehouse},{w.skus[0]},,12,{as_of}" for w in worlds]
    (tmp_path / "erp.csv").write_text("warehouse,sku,lot,quantity,as_of\n" + "\n".join(rows) + "\n")
    monkeypatch.setenv(
        "PREFECT_API_URL", PREFECT_API_URL.value()
    )  # the workers report to the same API
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        monkeypatch.setenv("CANGFLOW_DASK_ADDRESS", cluster.scheduler_address)
        get_settings.cache_clear()
        try:
            summary = nightly_flow(
                feed_dir=str(tmp_path), truth="erp", auto_approve_limit=5, warm_top=100
            )
            with cluster.get_client() as client:
                workers_used = client.run(lambda: os.getpid())
                # What the scheduler ran: task-key prefixes and how many of each reached a final state.
                ran = client.run_on_scheduler(
                    lambda dask_scheduler: {
                        name: sum(prefix.state_counts.values())
                        for name, prefix in dask_scheduler.task_prefixes.items()
                    }
                )
        finally:
            get_settings.cache_clear()
    assert summary["reconcile"]["applied"] == 2 and summary["warmup"]["warehouses"] >= 2
    assert len(workers_used) == 2
    assert sum(ran.values()) >= 4, ran  # 2 warmups and 2 order applications, one per warehouse
    with tasks_db.session() as s:
        assert [stock.on_hand(s, warehouse=w.warehouse, sku=w.skus[0]) for w in worlds] == [12, 12]
