"""Secrets stay secret: with the database URL in a Prefect Secret block, each role's own URL in
a block of its own or in the settings, and the ERP URL in the settings, no password appears in
flow parameters, logs, artifacts or pushed metrics. And the
reconciliation notice reaches a webhook (a local receiver) through a notification block."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.builders import World
from tests.services import http_receiver

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-pw-4711"  # trust auth ignores it, so the URLs still work
ROLE_PASSWORDS = {"owner": "0wner-pw-1234", "app": "app-pw-5678", "reader": "r3ader-pw-9012"}


@pytest.fixture(scope="module")
def receiver():
    with http_receiver() as hook:
        yield hook, hook.bodies


@pytest.fixture(scope="module")
def secret_world(tasks_db, prefect_api, own_database_url, receiver):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.blocks.system import Secret

    from tasks import cache as cache_tasks
    from tasks.database import forget
    from warehouse.db.roles import RoleNames
    from warehouse.settings import get_settings

    secret_url = own_database_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    Secret(value=secret_url).save("cangflow-test-database-url", overwrite=True)
    names = RoleNames.from_settings()
    role_urls = {
        role: own_database_url.replace("postgres@", f"{names.of(role)}:{password}@", 1)
        for role, password in ROLE_PASSWORDS.items()
    }
    for role in ("owner", "app"):  # from Secret blocks; the reader's from the settings
        Secret(value=role_urls[role]).save(f"cangflow-test-{role}-url", overwrite=True)
    hook, _ = receiver
    CustomWebhookNotificationBlock(
        name="cangflow-test-admin",
        url=f"{hook.url}/notify",
        method="POST",
        json_data={"text": "{{body}}"},
        allow_private_urls=True,
    ).save("cangflow-test-admin", overwrite=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CANGFLOW_DATABASE_URL")
        patch.setenv("CANGFLOW_DATABASE_SECRET_BLOCK", "cangflow-test-database-url")
        patch.setenv("CANGFLOW_OWNER_DATABASE_SECRET_BLOCK", "cangflow-test-owner-url")
        patch.setenv("CANGFLOW_APP_DATABASE_SECRET_BLOCK", "cangflow-test-app-url")
        patch.setenv("CANGFLOW_READER_DATABASE_URL", role_urls["reader"])
        patch.setenv("CANGFLOW_ERP_URL", secret_url)
        patch.setenv("CANGFLOW_NOTIFY_BLOCK", "custom-webhook/cangflow-test-admin")
        get_settings.cache_clear()
        cache_tasks.forget()
        forget()
        world = World.create(tasks_db, bins=1)
        world.stocked_sku(5)
        yield world
        cache_tasks.forget()
        forget()
    get_settings.cache_clear()


def _everything_prefect_kept() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
    parts = [json.dumps(run.parameters, default=str) for run in runs]
    parts += [log.message for log in logs]
    parts += [
        json.dumps(artifact.data, default=str) + str(artifact.description) for artifact in artifacts
    ]
    return "\n".join(parts)


def test_no_password_in_parameters_logs_artifacts_or_metrics(secret_world, own_admin_db, receiver):
    from prometheus_client import generate_latest

    from flows.monitoring import run_metrics
    from flows.partition_rollover import rollover_flow
    from flows.reconcile import reconcile_flow
    from flows.snapshot import snapshot_flow
    from tasks.database import database
    from warehouse.db.roles import RoleNames

    for (
        role,
        password,
    ) in ROLE_PASSWORDS.items():  # each role's URL was used, and logs in as the role
        assert password in database(role).url.render_as_string(hide_password=False)
        assert database(role).acting_role() == RoleNames.from_settings().of(role)
    snapshot_flow()  # the app role, and the owner for snapshot partitions
    rollover_flow()  # the owner
    with (
        own_admin_db.session() as s
    ):  # the ERP's side of the test: a table no cangflow role may make
        from sqlalchemy import text

        s.execute(
            text(
                "CREATE TABLE IF NOT EXISTS erp_side (warehouse text, sku text, lot text, quantity bigint, as_of timestamptz)"
            )
        )
        s.execute(text("DELETE FROM erp_side"))
        s.execute(
            text("INSERT INTO erp_side VALUES (:w, :s, NULL, 9, :t)"),
            {
                "w": secret_world.warehouse,
                "s": secret_world.skus[0],
                "t": datetime.now(UTC),
            },
        )
    summary = reconcile_flow(erp_query="SELECT warehouse, sku, lot, quantity, as_of FROM erp_side")
    assert summary["differences"] >= 1
    with run_metrics("secrets-check") as sink:
        pass
    kept = _everything_prefect_kept() + generate_latest(sink.registry).decode()
    assert kept and PASSWORD not in kept
    for password in ROLE_PASSWORDS.values():
        assert password not in kept
    hook, _ = receiver
    received = hook.bodies
    assert received and "ERP reconciliation run" in received[-1] and PASSWORD not in received[-1]
