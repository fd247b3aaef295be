"""deployments/prefect.yaml: every entrypoint is one of our flows, every schedule is a valid
cron in the configured time zone, and `prefect deploy --all` creates them on a local server."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.services import prefect_server

ROOT = Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"


def _deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_FILE.read_text())["deployments"]


def test_every_entrypoint_is_a_flow_and_every_schedule_a_valid_cron():
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    for deployment in _deployments():
        module, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow), deployment["name"]
        for schedule in deployment.get("schedules", []):
            CronSchedule(
                cron=schedule["cron"], timezone=schedule["timezone"]
            )  # raises when either is invalid
        assert set(deployment.get("parameters", {})) <= set(flow.parameters.properties), deployment[
            "name"
        ]
    assert {d["name"] for d in _deployments()} == {
        "nightly",
        "snapshot",
        "rollover",
        "reconcile",
        "warmup",
        "relay",
    }
    relay = next(d for d in _deployments() if d["name"] == "relay")
    assert (
        "schedules" not in relay and relay["parameters"]["follow"] is True
    )  # a service, not a run a minute


def test_the_pull_step_finds_the_project_where_the_worker_runs_not_where_it_was_deployed():
    config = yaml.safe_load(PREFECT_FILE.read_text())
    assert "$PWD" not in yaml.safe_dump(config["pull"])
    assert config["pull"] == [{"flows.deployment_steps.set_project_directory": {}}]


def test_every_schedule_runs_in_the_business_time_zone():
    """The schedules' time zone is the one definition, and it is CANGFLOW_BUSINESS_TIMEZONE's
    default: the snapshot at 00:15 runs after the business day ended. The file says so where a
    site changes it (a site outside UTC changes both)."""
    from warehouse.settings import Settings

    config = yaml.safe_load(PREFECT_FILE.read_text())
    business = Settings.model_fields["business_timezone"].default
    assert config["definitions"]["time_zone"] == business == "UTC"
    zones = {schedule["timezone"] for d in _deployments() for schedule in d.get("schedules", [])}
    assert zones == {config["definitions"]["time_zone"]}
    anchor = next(line for line in PREFECT_FILE.read_text().splitlines() if "&time_zone" in line)
    assert "CANGFLOW_BUSINESS_TIMEZONE" in anchor
    assert "CANGFLOW_BUSINESS_TIMEZONE" in (ROOT / "deployments" / "README.md").read_text()


@pytest.mark.integration
def test_prefect_deploy_all_creates_the_deployments_on_a_local_server_and_a_worker_runs_one(
    tmp_path, tasks_db
):
    prefect = [sys.executable, "-m", "prefect"]
    with prefect_server(tmp_path) as env:
        pool = subprocess.run(
            [*prefect, "work-pool", "create", "cangflow-process", "--type", "process"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert pool.returncode == 0, pool.stdout + pool.stderr
        # Deployed from a checkout that is gone by the time the worker runs (another host's path).
        checkout = tmp_path / "deployer-checkout"
        for part in ("flows", "tasks", "warehouse", "expectations", "deployments"):
            shutil.copytree(
                ROOT / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__")
            )
        deployed = subprocess.run(
            [
                *prefect,
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(checkout / "deployments" / "prefect.yaml"),
            ],
            env={**env, "PWD": str(checkout)},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=checkout,
        )  # PWD as a shell in the checkout sets it
        shutil.rmtree(checkout)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        listed = subprocess.run(
            [*prefect, "deployment", "ls"], env=env, capture_output=True, text=True, timeout=120
        )
        for name in (
            "nightly/nightly",
            "snapshot/snapshot",
            "partition-rollover/rollover",
            "erp-reconciliation/reconcile",
            "cache-warmup/warmup",
            "outbox-relay/relay",
        ):
            assert name in listed.stdout, listed.stdout
        # A run by hand, picked up by a process worker started in another directory (which polls
        # once and leaves): the pull step finds the project at run time.
        elsewhere = tmp_path / "worker-home"
        elsewhere.mkdir()
        started = subprocess.run(
            [*prefect, "deployment", "run", "snapshot/snapshot"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        worker = subprocess.run(
            [*prefect, "worker", "start", "--pool", "cangflow-process", "--run-once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=elsewhere,
        )
        assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
        state = subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    "from prefect.client.orchestration import get_client\n"
                    "with get_client(sync_client=True) as c:\n"
                    "    print([r.state_name for r in c.read_flow_runs() if r.deployment_id])"
                ),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "'Completed'" in state.stdout, state.stdout + state.stderr + worker.stdout[-2000:]


def test_the_documented_automations_are_valid_prefect_automations():
    from uuid import uuid4

    from prefect.events.schemas.automations import AutomationCore

    text = (
        (ROOT / "deployments" / "automations.yaml")
        .read_text()
        .replace("BLOCK_DOCUMENT_ID", str(uuid4()))
    )
    automations = yaml.safe_load(text)["automations"]
    parsed = [AutomationCore.model_validate(automation) for automation in automations]
    assert {a.name for a in parsed} == {
        "cangflow flow run failed",
        "cangflow stock discrepancy",
        "cangflow stale ERP feed",
        "cangflow nightly not completed",
    }
    assert (
        parsed[3].trigger.posture == "Proactive"
        and parsed[3].trigger.within.total_seconds() == 26 * 3600
    )
    assert "cangflow.reconciliation.discrepancy" in parsed[1].trigger.expect
    assert "cangflow.reconciliation.stale" in parsed[2].trigger.expect
