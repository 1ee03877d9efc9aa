"""Dashboard JSON against Grafana's schema, as published in grafana-foundation-sdk (its
models are generated from Grafana's CUE schema): parsing through them must keep every key
(a key the schema does not know is lost, so a typo fails here), panel options are parsed
by each panel type's own model. The SDK has no InfluxDB query model, so targets are
checked structurally below, and the files must match their generator."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


#: Keys the SDK cannot keep: its AnnotationTarget models only the built-in "grafana"
#: datasource's annotation query (its own TODO says it should be a DataQuery), so an
#: InfluxDB annotation's InfluxQL target is checked structurally in test_findings_are_annotations.
UNMODELLED = r"^/annotations/list\[\d+\]/target/(refId|rawQuery|fromAnnotations|textEditor|query|textColumn|tagsColumn)$"


def lost_keys(original, parsed, path: str = "") -> list[str]:
    """Keys of ``original`` that did not survive the schema models' round trip."""
    if isinstance(original, dict):
        if not isinstance(parsed, dict):
            return [f"{path} (became {type(parsed).__name__})"]
        out = []
        for key, value in original.items():
            out += [f"{path}/{key}"] if key not in parsed else lost_keys(value, parsed[key], f"{path}/{key}")
        return out
    if isinstance(original, list):
        return [k for i, (a, b) in enumerate(zip(original, parsed)) for k in lost_keys(a, b, f"{path}[{i}]")]
    return []


def unknown_keys(original: dict, parsed: dict) -> list[str]:
    """Lost keys but those the SDK does not model (UNMODELLED)."""
    return [k for k in lost_keys(original, parsed) if not re.match(UNMODELLED, k)]


@pytest.fixture(scope="module")
def sdk():
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        pytest.skip("grafana-foundation-sdk not installed (pip install -e .[test])")
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    return lambda data: json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_keeps_every_key_through_grafana_schema_models(sdk, path):
    data = json.loads(path.read_text())
    lost = unknown_keys(data, sdk(data))
    assert not lost, f"{path.name}: keys unknown to Grafana's dashboard schema: {lost}"


def test_schema_check_catches_a_misspelt_key(sdk):
    data = json.loads(DASHBOARDS[0].read_text())
    data["panels"][0]["gridPoss"] = data["panels"][0].pop("gridPos")
    assert unknown_keys(data, sdk(data)) == ["/panels[0]/gridPoss"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    data = json.loads(path.read_text())
    uid = "${datasource}"
    assert data["uid"] and data["title"] and isinstance(data["schemaVersion"], int)
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{panel['title']}: outside the 24-column grid"
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']}: overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and refs, f"{panel['title']}: refIds must be unique"
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == uid and t["rawQuery"] is True and t["query"].startswith("SELECT")
            assert t["resultFormat"] in ("time_series", "table")


def test_dashboard_files_match_their_generator():
    spec = importlib.util.spec_from_file_location("build_dashboards", DEPLOY / "grafana" / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, build in module.DASHBOARDS.items():
        assert (DEPLOY / "grafana" / "dashboards" / name).read_text() == module.render(build), (
            f"{name} is stale: run .venv/bin/python deploy/grafana/build_dashboards.py")


def test_dashboard_provider_points_where_compose_mounts_the_dashboards():
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/netmon.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert any(m.endswith(":" + path + ":ro") or m.endswith(":" + path) for m in mounts), (path, mounts)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_datasource_is_a_variable_not_a_hard_coded_uid(sdk, path):
    """Imports into an existing Grafana: every reference is ${datasource}, a datasource
    variable of type influxdb, also after the round trip through Grafana's models."""
    data = sdk(json.loads(path.read_text()))
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "influxdb"
    refs = re.findall(r'"datasource": \{"type": "influxdb", "uid": "([^"]*)"\}', json.dumps(data))
    assert refs and set(refs) == {"${datasource}"}, f"{path.name}: datasource uids {set(refs)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_group_and_collector_variables_filter_every_query(path):
    data = json.loads(path.read_text())
    names = {v["name"] for v in data["templating"]["list"]}
    assert {"group", "collector"} <= names
    for item in data["panels"]:
        for t in item.get("targets", []):
            q = t["query"]
            if "netmon_health" in q:
                assert "$collector" in q, f"{item['title']}: health query not filtered by $collector"
            elif "\"host\" = '$host'" not in q:
                assert "$group" in q, f"{item['title']}: not filtered by $group"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_findings_are_annotations(path):
    annotations = json.loads(path.read_text())["annotations"]["list"]
    assert {a["name"] for a in annotations} >= {"Critical findings", "Warning findings"}
    for a in annotations:
        target = a["target"]
        assert a["datasource"]["uid"] == "${datasource}" and target["rawQuery"] is True
        assert 'FROM "ntp_finding"' in target["query"] and "$timeFilter" in target["query"]
        assert target["textColumn"] == "explanation"


def units(data: dict) -> dict[str, set[str]]:
    """Panel title -> every unit it sets (defaults and overrides)."""
    out = {}
    for item in data["panels"]:
        if item["type"] == "row":
            continue
        config = item["fieldConfig"]
        found = {config["defaults"]["unit"]}
        found |= {p["value"] for o in config["overrides"] for p in o["properties"] if p["id"] == "unit"}
        out[item["title"]] = found
    return out


def test_grafana_units_are_bytes_ms_s_and_rates_not_short():
    overview = units(json.loads((DEPLOY / "grafana/dashboards/netmon-overview.json").read_text()))
    host = units(json.loads((DEPLOY / "grafana/dashboards/netmon-host.json").read_text()))
    assert "decbytes" in overview["Top NTP talkers"] and "reqps" in overview["Requests out by group"]
    assert "ms" in overview["Spool backlog and write latency"] and "pps" in overview["Collector input"]
    assert "s" in host["Polling against its own poll"] and "Bps" in host["Mode 6/7 traffic"]
    assert "pps" in host["Requests and replies"] and "reqps" in host["Origin timestamps"]
    timeseries = [t for t, u in (overview | host).items() if u == {"short"}]
    assert not timeseries, f"panels left with unit 'short' only: {timeseries}"


def test_grafana_provisioned_datasource_is_not_the_default():
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/netmon-influxdb.yml").read_text())
    assert datasource["datasources"][0]["isDefault"] is False
