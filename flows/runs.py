"""Running a flow by hand and saying where its run is recorded: the flow's summary plus the
run's name, state and UI address (none when the run went to a temporary Prefect server, which
vanishes with the command)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunRecord:
    flow: str
    name: str
    state: str
    url: str | None


def ui_base() -> str | None:
    """The Prefect UI of the server runs are recorded on; None for a temporary one."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return settings.ui_url if settings.api.url else None


def run_flow(flow, **parameters: Any) -> tuple[Any, RunRecord]:
    """Call `flow` in this process; returns its result and its run. A failed run raises the
    flow's own exception (the record is then of no use to the caller)."""
    from prefect.client.orchestration import get_client

    state = flow(**parameters, return_state=True)
    result = state.result()  # raises the flow's exception when the run failed
    run_id = state.state_details.flow_run_id
    base = ui_base()
    name = str(run_id)
    try:
        with get_client(sync_client=True) as client:
            name = client.read_flow_run(run_id).name
    except Exception:
        pass
    return result, RunRecord(
        flow.name, name, state.name, f"{base}/runs/flow-run/{run_id}" if base else None
    )
