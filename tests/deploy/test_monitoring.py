"""deploy/monitoring: Prometheus scrape configs and the STAR Grafana dashboard.

The scrape configs must find what Ray and KubeRay actually produce (Ray's service-discovery file,
the pod labels and the container port of deploy/kuberay/raycluster.yaml); the dashboard must
query the metric names Ray exports for the service's metrics, per job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ray.dashboard.modules.metrics as ray_metrics_module
import yaml
from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

from tests.deploy import DEPLOY
from tests.deploy.manifests import ray_container, raycluster

MONITORING = DEPLOY / "monitoring"
DASHBOARD = MONITORING / "grafana" / "star-jobs.json"
# Ray's own Prometheus config, shipped with Ray (what `ray metrics launch-prometheus` uses).
RAY_PROMETHEUS_YML = (
    Path(ray_metrics_module.__file__).parent / "export" / "prometheus" / "prometheus.yml"
)
# What Ray exports for the service's ray.util.metrics (measured with Ray 2.60: a Gauge `x` is
# `ray_x`, a Counter `x` is `ray_x_total`), each series tagged job_id.
GAUGES = {"star_meta_loss", "star_outer_step", "star_inner_steps_per_second", "star_grad_norm"}
COUNTERS = {"star_staleness_drops", "star_worker_restarts"}
EXPORTED = {f"ray_{g}" for g in GAUGES} | {f"ray_{c}_total" for c in COUNTERS}
JOB_FILTER = '{job_id=~"$job_id"}'


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


def test_kubernetes_scrape_job_keeps_the_metrics_port_of_this_clusters_pods():
    (job,) = load("prometheus-kubernetes.yml")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keeps == {
        ("__meta_kubernetes_pod_label_ray_io_cluster",): raycluster()["metadata"]["name"],
        ("__meta_kubernetes_pod_container_port_name",): "metrics",
    }
    assert metrics_port_names() == {"metrics"}
    targets = {r["target_label"] for r in job["relabel_configs"] if "target_label" in r}
    assert "ray_io_cluster" in targets  # the label Ray's own Grafana dashboards filter on


def test_pod_monitor_selects_this_clusters_pods_and_their_metrics_port():
    monitor = load("podmonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"ray.io/cluster": raycluster()["metadata"]["name"]}
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in metrics_port_names()
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
    assert shown == EXPORTED
    assert len({p["id"] for p in panels}) == len(panels)


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
