"""The alert rules and the dashboard speak of metrics we export, each read with the function its
type needs (a counter through rate() or increase(), a gauge never, a histogram's buckets through
histogram_quantile(rate())); the rules are valid Prometheus rules, and every alert has a case
in monitoring/tests where it fires and one where it stays quiet (promtool, Debian's prometheus
package, installed by .ci/run)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from warehouse.metrics.sinks import DEFINITIONS

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


_FUNCTION_BEFORE = re.compile(r"(\w+)\(\s*$")


def _misread(expr: str) -> list[str]:
    """Each metric in `expr` read with a function that does not suit its type."""
    wrong = []
    for found in _NAME.finditer(expr):
        name = found.group(0)
        before = _FUNCTION_BEFORE.search(expr[: found.start()])
        function = before.group(1) if before else ""
        base, kind = name, None
        for suffix in ("_bucket", "_count", "_sum"):
            if (
                name.endswith(suffix)
                and DEFINITIONS.get(name[: -len(suffix)], ("",))[0] == "histogram"
            ):
                base, kind = name[: -len(suffix)], "histogram"
        kind = kind or DEFINITIONS.get(base, ("unknown",))[0]
        if kind in ("counter", "histogram") and function not in ("rate", "increase", "irate"):
            wrong.append(
                f"{name} ({kind}) read with {function or 'no function'}(): use rate() or increase()"
            )
        if kind == "gauge" and function in ("rate", "increase", "irate"):
            wrong.append(
                f"{name} (gauge) read with {function}(): a gauge's own value is the reading"
            )
        if name.endswith("_bucket") and "histogram_quantile" not in expr:
            wrong.append(f"{name}: buckets are read with histogram_quantile(rate())")
    return wrong


def test_every_expression_reads_each_metric_with_the_function_its_type_needs():
    wrong = {expr: _misread(expr) for expr in _expressions()}
    assert not {expr: found for expr, found in wrong.items() if found}


def test_the_type_check_itself_catches_a_rate_of_a_gauge_and_a_bare_counter():
    assert _misread("rate(cangflow_flow_last_run_failed[5m])")
    assert _misread("sum(cangflow_deductions_attempted_total)")
    assert _misread("sum(rate(cangflow_deduction_seconds_bucket[5m]))")
    assert not _misread(
        "histogram_quantile(0.99, sum by (le) (rate(cangflow_deduction_seconds_bucket[5m])))"
    )


def test_every_alert_has_a_firing_and_a_quiet_case():
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    firing, quiet = set(), set()
    for case in (MONITORING / "tests").glob("*.yml"):
        for test in yaml.safe_load(case.read_text())["tests"]:
            for expected in test.get("alert_rule_test", []):
                (firing if expected["exp_alerts"] else quiet).add(expected["alertname"])
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"


def test_the_seeds_metrics_each_have_an_alert():
    rules = (MONITORING / "alerts.yml").read_text()
    for needed in (
        "cangflow_deductions_attempted_total",
        "cangflow_cache_hits_total",
        "cangflow_db_slow_queries_total",
        "cangflow_flow_last_success_timestamp_seconds",
    ):
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
        done = subprocess.run(
            [_promtool(), "test", "rules", case.name],
            capture_output=True,
            text=True,
            cwd=case.parent,
        )
        assert done.returncode == 0, f"{case.name}: {done.stdout}{done.stderr}"


def test_promtool_accepts_the_rules():
    done = subprocess.run(
        [_promtool(), "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
