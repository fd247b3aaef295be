"""The alert rules and the dashboard speak of metrics we export, and the rules are valid
Prometheus rules (checked with promtool where it is installed: Debian's prometheus package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from warehouse.metrics import DEFINITIONS

MONITORING = Path(__file__).resolve().parents[2] / "deployments" / "monitoring"
_NAME = re.compile(r"\bcangflow_[a-z0-9_]+")


def _exported(name: str) -> bool:
    for suffix in ("_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix) and name[: -len(suffix)] in DEFINITIONS:
            return True
    return name in DEFINITIONS


def _expressions() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    found += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return found


def test_every_metric_in_the_rules_and_the_dashboard_is_one_we_export():
    names = {name for expr in _expressions() for name in _NAME.findall(expr)}
    assert names and not [name for name in names if not _exported(name)]


def test_the_seeds_metrics_each_have_an_alert():
    rules = (MONITORING / "alerts.yml").read_text()
    for needed in ("cangflow_deductions_attempted_total", "cangflow_cache_hits_total", "cangflow_db_slow_queries_total",
                   "cangflow_flow_last_success_timestamp_seconds"):
        assert needed in rules


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package: prometheus)")
    return promtool


def test_the_rule_tests_fire_on_bad_series_and_stay_quiet_on_good_ones():
    """Each file in monitoring/tests feeds a rule series as cangflow pushes them and expects it
    to fire, and not to fire, at given times (`promtool test rules`)."""
    cases = sorted((MONITORING / "tests").glob("*.yml"))
    assert cases
    for case in cases:
        done = subprocess.run([_promtool(), "test", "rules", case.name], capture_output=True, text=True, cwd=case.parent)
        assert done.returncode == 0, f"{case.name}: {done.stdout}{done.stderr}"


def test_promtool_accepts_the_rules():
    done = subprocess.run([_promtool(), "check", "rules", str(MONITORING / "alerts.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
