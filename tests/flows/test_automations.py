"""The documented automations (deployments/automations.yaml) turn a failed cangflow flow run, the
reconciliation's discrepancy event and a stale feed into notifications, delivered to a local webhook."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.services import http_receiver
from warehouse.errors import InvalidArgument

pytestmark = pytest.mark.integration

AUTOMATIONS = Path(__file__).resolve().parents[2] / "deployments" / "automations.yaml"


@pytest.fixture
def webhook():
    with http_receiver() as hook:
        yield hook.port, hook


def _wait_for(received, text: str, seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [body for body in received.bodies if text in body]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no notification containing {text!r}; got {received.bodies}")


def test_a_failed_run_a_discrepancy_and_a_stale_feed_reach_the_webhook(
    tasks_db, prefect_api, webhook, tmp_path
):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.schemas.automations import AutomationCore

    from flows.snapshot import snapshot_flow

    port, received = webhook
    block_id = CustomWebhookNotificationBlock(
        name="ops",
        url=f"http://127.0.0.1:{port}/notify",
        method="POST",
        json_data={"text": "{{body}}"},
        allow_private_urls=True,
    ).save("cangflow-test-ops", overwrite=True)
    text = AUTOMATIONS.read_text().replace("BLOCK_DOCUMENT_ID", str(block_id))
    with get_client(sync_client=True) as client:
        made = [
            client.create_automation(AutomationCore.model_validate(a))
            for a in yaml.safe_load(text)["automations"]
        ]
    try:
        time.sleep(2)  # the triggers service loads new automations
        emit_event(
            event="cangflow.reconciliation.discrepancy",
            resource={
                "prefect.resource.id": "cangflow.reconciliation.run.7",
                "prefect.resource.name": "reconciliation run 7",
            },
            payload={"differences": 3, "within_tolerance": 1, "pending_approval": 2},
        )
        assert "3 differences" in _wait_for(received, "Reconciliation reconciliation run 7")
        with pytest.raises(InvalidArgument, match="has not ended"):
            snapshot_flow(day=date(2999, 1, 1))  # a day that has not ended: the run fails
        assert "Failed" in _wait_for(received, "of snapshot ended")
        from flows.reconcile import reconcile_flow

        assert reconcile_flow(feed_dir=str(tmp_path))["status"] == "stale"  # the ERP sent nothing
        assert "holds no *.csv feed" in _wait_for(received, "found no new ERP feed")
    finally:
        with get_client(sync_client=True) as client:
            for automation in made:
                client.delete_automation(automation)


def test_the_proactive_automation_tells_ops_when_no_nightly_completed_in_time(
    tasks_db, prefect_api, webhook
):
    """The same automation with its 26 hours cut to 10 seconds. While nightly runs complete (their
    Completed events, as the server emits them), it stays quiet; once they stop, it fires."""
    import uuid

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.schemas.automations import AutomationCore

    port, received = webhook
    block_id = CustomWebhookNotificationBlock(
        name="ops",
        url=f"http://127.0.0.1:{port}/notify",
        method="POST",
        json_data={"text": "{{body}}"},
        allow_private_urls=True,
    ).save("cangflow-test-ops-proactive", overwrite=True)
    text = AUTOMATIONS.read_text().replace("BLOCK_DOCUMENT_ID", str(block_id))
    [nightly] = [
        a
        for a in yaml.safe_load(text)["automations"]
        if a["name"] == "cangflow nightly not completed"
    ]
    assert nightly["trigger"]["within"] == 26 * 3600
    nightly["trigger"]["within"] = 10
    with get_client(sync_client=True) as client:
        made = client.create_automation(AutomationCore.model_validate(nightly))
    try:
        flow_id = uuid.uuid4()
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline:  # a nightly completes every 3 seconds
            emit_event(
                event="prefect.flow-run.Completed",
                resource={"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}"},
                related=[
                    {
                        "prefect.resource.id": f"prefect.flow.{flow_id}",
                        "prefect.resource.role": "flow",
                        "prefect.resource.name": "nightly",
                    }
                ],
            )
            time.sleep(3)
        assert not [body for body in received.bodies if "nightly flow completed" in body]
        assert "No run of the nightly flow completed" in _wait_for(
            received, "nightly flow completed", seconds=120
        )
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(made)
