"""deploy/monitoring: Prometheus scrape configs, the STAR Grafana dashboard, Grafana ConfigMaps.

The scrape configs must find what Ray and KubeRay actually produce (Ray's service-discovery file,
the pod labels and the container ports of deploy/kuberay/raycluster.yaml, Ray's autoscaler and
dashboard metrics ports); the dashboard and deploy/README.md must show exactly the metrics the
service exports (services/cluster/metrics.py), per job; grafana-configmaps.sh must turn Ray's
generated dashboards into ConfigMaps that Kubernetes accepts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import ray.dashboard.modules.metrics as ray_metrics_module
import yaml
from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE
from ray.autoscaler._private.constants import AUTOSCALER_METRIC_PORT
from ray.dashboard.consts import DASHBOARD_METRIC_PORT
from ray.dashboard.modules.metrics import grafana_dashboard_factory

from services.cluster.metrics import METRICS, prometheus_name
from tests.deploy import DEPLOY, dev_tool
from tests.deploy.manifests import README, ray_container, raycluster

MONITORING = DEPLOY / "monitoring"
DASHBOARD = MONITORING / "grafana" / "star-jobs.json"
# Ray's own Prometheus config, shipped with Ray (what `ray metrics launch-prometheus` uses).
RAY_PROMETHEUS_YML = (
    Path(ray_metrics_module.__file__).parent / "export" / "prometheus" / "prometheus.yml"
)
# What Prometheus scrapes for the service's metrics, each series tagged job_id.
EXPORTED = {prometheus_name(m) for m in METRICS}
JOB_FILTER = '{job_id=~"$job_id"}'
CONFIGMAPS_SCRIPT = MONITORING / "grafana-configmaps.sh"
# Kubernetes refuses a ConfigMap whose data passes this many bytes.
CONFIGMAP_MAX_BYTES = 1024 * 1024
# The head's metrics ports besides each node's --metrics-export-port (Ray's defaults).
HEAD_METRICS_PORTS = {"as-metrics": AUTOSCALER_METRIC_PORT, "dash-metrics": DASHBOARD_METRIC_PORT}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def load(name: str) -> dict:
    return yaml.safe_load((MONITORING / name).read_text())


def test_ray_up_prometheus_reads_rays_service_discovery_file():
    (job,) = load("prometheus-ray-up.yml")["scrape_configs"]
    (sd,) = job["file_sd_configs"]
    assert sd["files"] == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    ray_jobs = yaml.safe_load(RAY_PROMETHEUS_YML.read_text())["scrape_configs"]
    assert sd["files"] == ray_jobs[0]["file_sd_configs"][0]["files"]


def metrics_port_names() -> set[str]:
    """Names that every Ray container of the cluster gives its --metrics-export-port."""
    cluster = raycluster()
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    per_group = []
    for group in groups:
        export_port = int(group["rayStartParams"]["metrics-export-port"])
        ports = ray_container(group["template"])["ports"]
        per_group.append({p["name"] for p in ports if p["containerPort"] == export_port})
    return set.intersection(*per_group)


def head_ports() -> dict[str, int]:
    head = ray_container(raycluster()["spec"]["headGroupSpec"]["template"])
    return {p["name"]: p["containerPort"] for p in head["ports"]}


def test_head_exposes_rays_autoscaler_and_dashboard_metrics_ports():
    ports = head_ports()
    assert {name: ports[name] for name in HEAD_METRICS_PORTS} == HEAD_METRICS_PORTS


def test_kubernetes_scrape_job_keeps_the_metrics_port_of_this_clusters_pods():
    (job,) = load("prometheus-kubernetes.yml")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    port_regex = keeps.pop(("__meta_kubernetes_pod_container_port_name",))
    assert keeps == {
        ("__meta_kubernetes_pod_label_ray_io_cluster",): raycluster()["metadata"]["name"],
    }
    assert metrics_port_names() == {"metrics"}
    # Prometheus anchors a relabel regex: exactly these port names are kept.
    kept = {name for name in head_ports() if re.fullmatch(port_regex, name)}
    assert kept == {"metrics", *HEAD_METRICS_PORTS}
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert "ray_io_cluster" in targets  # the label Ray's own Grafana dashboards filter on


def test_pod_monitor_selects_this_clusters_pods_and_their_metrics_port():
    monitor = load("podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"ray.io/cluster": raycluster()["metadata"]["name"]}
    }
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", *HEAD_METRICS_PORTS]
    assert endpoints[0]["port"] in metrics_port_names()
    for endpoint in endpoints:
        assert endpoint["port"] in head_ports()
        targets = {r["targetLabel"] for r in endpoint["relabelings"]}
        assert "ray_io_cluster" in targets


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_has_a_data_source_and_a_job_variable():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    job = variables["job_id"]
    assert job["query"]["query"] == "label_values(ray_star_outer_step, job_id)"
    assert job["multi"] and job["includeAll"]


def test_every_panel_shows_one_star_metric_per_job():
    panels = dashboard()["panels"]
    shown = set()
    for panel in panels:
        (target,) = panel["targets"]
        expr = target["expr"]
        names = set(re.findall(r"\bray_star_\w+", expr))
        assert len(names) == 1 and names <= EXPORTED, expr
        assert JOB_FILTER in expr and "by (job_id)" in expr, expr
        assert target["legendFormat"] == "{{job_id}}"
        assert panel["datasource"]["uid"] == "${datasource}"
        (name,) = names
        if name.endswith("_total"):  # counters: how many in each interval
            assert f"increase({name}{JOB_FILTER}[$__rate_interval])" in expr
        shown |= names
    assert shown == EXPORTED  # every exported metric is charted, nothing else
    assert len(panels) == len(METRICS)
    assert len({p["id"] for p in panels}) == len(panels)


def test_readme_documents_exactly_the_exported_metrics():
    text = README.read_text()
    rows = re.findall(r"^\| `(ray_star_\w+)` \| (gauge|counter) \| (.+?) \|$", text, re.M)
    assert rows == [(prometheus_name(m), m.kind, m.description) for m in METRICS]
    assert set(re.findall(r"\bray_star_\w+", text)) == EXPORTED  # no other name anywhere


def test_panels_do_not_overlap_on_the_24_column_grid():
    cells = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine


# --- Grafana ConfigMaps ----------------------------------------------------------------------


@pytest.fixture
def ray_dashboards(tmp_path: Path) -> list[Path]:
    """The dashboards Ray writes on the head, generated here by Ray's own factory (the files are
    named as Ray names them: generate_<x>_grafana_dashboard -> <x>_grafana_dashboard.json)."""
    folder = tmp_path / "ray-dashboards"
    folder.mkdir()
    files = []
    for name in dir(grafana_dashboard_factory):
        if name.startswith("generate_") and name.endswith("_grafana_dashboard"):
            content, _uid = getattr(grafana_dashboard_factory, name)()
            path = folder / (name.removeprefix("generate_") + ".json")
            path.write_text(content)
            files.append(path)
    return files


# Records each call's arguments, tab-separated, one call per line.
KUBECTL_STUB = """#!/usr/bin/env bash
{ printf '%s\\t' "$@"; echo; } >> "$STUB_DIR/kubectl-calls"
"""


def run_configmaps_script(tmp_path: Path, *args: str) -> tuple[int, list[list[str]]]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "kubectl").write_text(KUBECTL_STUB)
    (stubs / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_DIR": str(stubs)}
    result = subprocess.run(
        ["bash", str(CONFIGMAPS_SCRIPT), *args], env=env, capture_output=True, text=True
    )
    calls_file = stubs / "kubectl-calls"
    lines = calls_file.read_text().splitlines() if calls_file.exists() else []
    calls = [line.split("\t")[:-1] for line in lines]
    return result.returncode, calls


def test_rays_dashboards_do_not_fit_one_configmap(ray_dashboards):
    """Why the script exists: all of Ray's dashboards in one ConfigMap pass Kubernetes' bound."""
    assert sum(p.stat().st_size for p in ray_dashboards) > CONFIGMAP_MAX_BYTES


@pytest.mark.processes  # runs the script
def test_every_dashboard_gets_its_own_configmap_within_the_bound(tmp_path, ray_dashboards):
    files = [*ray_dashboards, DASHBOARD]
    code, calls = run_configmaps_script(tmp_path, "monitoring", *map(str, files))
    assert code == 0
    creates = [c for c in calls if c[:2] == ["create", "configmap"]]
    from_files = {}
    for call in creates:
        name, sources = call[2], [a.split("=", 1)[1] for a in call if a.startswith("--from-file=")]
        assert call[call.index("-n") + 1] == "monitoring"
        assert DNS_SUBDOMAIN.fullmatch(name), name
        assert sum(Path(s).stat().st_size for s in sources) <= CONFIGMAP_MAX_BYTES, name
        from_files[name] = sources
    assert sorted(s for sources in from_files.values() for s in sources) == sorted(map(str, files))
    assert len(from_files) == len(files)  # one per dashboard, names distinct
    for name in from_files:  # replaced if it exists, then labelled for Grafana's sidecar
        delete = ["delete", "configmap", name, "-n", "monitoring", "--ignore-not-found"]
        label = ["label", "configmap", name, "-n", "monitoring", "grafana_dashboard=1"]
        create = next(c for c in creates if c[2] == name)
        assert calls.index(delete) < calls.index(create) < calls.index(label)


@pytest.mark.processes  # runs the script
def test_a_dashboard_over_the_bound_is_refused_before_anything_is_created(tmp_path):
    small, big = tmp_path / "small.json", tmp_path / "big.json"
    small.write_text("{}")
    big.write_bytes(b" " * (CONFIGMAP_MAX_BYTES + 1))
    code, calls = run_configmaps_script(tmp_path, "monitoring", str(small), str(big))
    assert code == 1 and calls == []


def test_readme_makes_the_configmaps_with_the_script():
    text = README.read_text()
    assert (
        "deploy/monitoring/grafana-configmaps.sh <grafana namespace> \\\n"
        "  ray-dashboards/*.json deploy/monitoring/grafana/star-jobs.json"
    ) in text
    assert "kubectl create configmap" not in text  # no hand-made ConfigMap of several files


@pytest.mark.processes  # runs shellcheck
def test_configmaps_script_passes_shellcheck():
    result = subprocess.run(
        [dev_tool("shellcheck"), str(CONFIGMAPS_SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
