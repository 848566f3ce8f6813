"""Grafana provisioning, offline: the committed dashboards are the generator's output and well formed.

Structure checked against what generate_dashboards.py defines and Grafana's dashboard JSON model needs: rows
and panels with unique ids, a gridPos inside the 24-column grid without overlaps, every query panel on the
provisioned data source uid, targets with a refId and a PromQL expr that parses (promtool). Whether every
panel shows data is the live test's job (tests/e2e/test_monitoring_live.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[1]
GRAFANA = MONITORING / "grafana"
PROVISIONING = GRAFANA / "provisioning"
DASHBOARD_DIR = PROVISIONING / "dashboards" / "mlstack"
# Where compose mounts monitoring/grafana/provisioning inside the Grafana container.
CONTAINER_PROVISIONING = Path("/etc/grafana/provisioning")
GRID_WIDTH = 24
PANEL_TYPES = {"timeseries", "stat"}
REQUIRED_TOP_LEVEL = {"uid", "title", "panels", "schemaVersion", "time", "templating", "annotations", "refresh"}
# What each dashboard must show, by a word of a panel title (the list).
REQUIRED_PANELS = {
    "mlstack-serving": ["Requests per second", "Latency percentiles", "5xx ratio", "Errors by route",
                        "Rows predicted", "Model version per worker", "Time since model load"],
    "mlstack-pipeline": ["Runs per hour", "Failed runs", "Last run duration", "ETL rows", "Promotion decisions",
                         "Training data rows"],
    "mlstack-model-quality": ["MAE", "RMSE", "R²", "PSI per feature", "KS statistic", "Live MAE"],
}


def load_generator():
    """The generator script as a module (it is a script, not part of a package)."""
    name = "mlstack_monitoring_generate_dashboards"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GRAFANA / "generate_dashboards.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def committed() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def query_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def provisioned_datasource() -> dict[str, Any]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (datasource,) = doc["datasources"]
    return datasource


BOARDS = committed()


def test_committed_json_is_the_generator_output():
    generator = load_generator()
    generated = {name: json.loads(generator.render(board)) for name, board in generator.dashboards().items()}
    assert generated == BOARDS, "run: python monitoring/grafana/generate_dashboards.py"
    assert generator.main(["--check"]) == 0


def test_datasource_is_provisioned_with_the_uid_the_dashboards_use():
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == load_generator().DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090"


def test_dashboard_provider_points_at_the_generated_folder():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "mlstack.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    in_container = Path(provider["options"]["path"])
    assert in_container == CONTAINER_PROVISIONING / DASHBOARD_DIR.relative_to(PROVISIONING)


def test_dashboard_uids_are_unique():
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(uids) == len(set(uids)) == 3
    assert set(uids) == set(REQUIRED_PANELS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_structure(name):
    board = BOARDS[name]
    assert set(board) >= REQUIRED_TOP_LEVEL, REQUIRED_TOP_LEVEL - set(board)
    assert isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    uid = provisioned_datasource()["uid"]
    for panel in board["panels"]:
        assert panel["title"], panel
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in grid.values()), panel["title"]
        assert grid["h"] >= 1 and grid["w"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        if panel["type"] == "row":
            assert grid["w"] == GRID_WIDTH and grid["h"] == 1 and "targets" not in panel
            continue
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel.get("description"), f"{panel['title']}: describe what the panel shows"
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_do_not_overlap(name):
    cells: dict[tuple[int, int], str] = {}
    for panel in BOARDS[name]["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_required_panels_exist():
    for board in BOARDS.values():
        titles = " | ".join(panel["title"] for panel in query_panels(board))
        for word in REQUIRED_PANELS[board["uid"]]:
            assert word in titles, f"{board['uid']} has no panel about {word!r}"


def test_every_panel_expression_parses(tmp_path):
    """promtool parses each expression as the expr of a recording rule (Grafana variables given a value)."""
    rules = [
        {"record": f"panel:check:{i}", "expr": target["expr"].replace("$__rate_interval", "1m")}
        for i, target in enumerate(t for board in BOARDS.values() for p in query_panels(board) for t in p["targets"])
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    binary = shutil.which("promtool")
    assert binary, "promtool not found: scripts/install.sh installs Debian's prometheus package"
    result = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_panels_only_use_metrics_the_apps_export(exported_series, metric_names_in):
    for board in BOARDS.values():
        for panel in query_panels(board):
            for target in panel["targets"]:
                unknown = metric_names_in(target["expr"]) - exported_series
                assert not unknown, f"{board['title']} / {panel['title']} reads metrics nobody exports: {unknown}"


def test_readme_describes_every_panel():
    text = (MONITORING / "README.md").read_text()
    missing = [panel["title"] for board in BOARDS.values() for panel in query_panels(board)
               if panel["title"] not in text]
    assert not missing, f"monitoring/README.md does not describe the panels {missing}"
