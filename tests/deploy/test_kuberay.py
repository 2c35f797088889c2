"""deploy/kuberay: the RayCluster, its Service, PersistentVolumeClaim, NetworkPolicy and Secrets.

Offline: Kubernetes' own kinds are validated against the schemas that `kubernetes-validate`
ships (strict: unknown fields are errors), the RayCluster against KubeRay's CRD schema
(tests/deploy/schemas), and the fields that make the deployment work are checked one by one:
pod security (the `restricted` Pod Security Standard), CPU requests without limits, and which
ports the NetworkPolicy opens to whom.
"""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from packaging.version import Version

from tests.deploy.manifests import (
    RAY_VERSION,
    RAYCLUSTER,
    SECRETS,
    env_of,
    load_documents,
    one,
    pod_templates,
    project_version,
    ray_container,
    ray_start_argv,
    raycluster,
    worker_group,
)

CRD_SCHEMA = Path(__file__).parent / "schemas" / "kuberay-v1.7.0-rayclusters.ray.io-v1.json"
# Kubernetes minor versions to validate against: those kubernetes-validate ships from 1.29 on.
K8S_VERSIONS = sorted(
    {
        kubernetes_validate.utils.major_minor(v)
        for v in kubernetes_validate.utils.all_versions()
        if Version(v) >= Version("1.29")
    },
    key=Version,
)
# Ray token authentication exists from this Ray on (KubeRay's authOptions needs it too).
RAY_TOKEN_AUTH_SINCE = Version("2.52.0")
HEAD_DATA_DIR = "/data"
GRPC_PORT = 50051
METRICS_PORT = 8080
RAY_UID, RAY_GID = 1000, 100  # the `ray` user of the rayproject/ray images
# The container securityContext that the `restricted` Pod Security Standard asks for.
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Volume types the `restricted` standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def kubernetes_objects() -> list[dict[str, Any]]:
    docs = load_documents(RAYCLUSTER) + load_documents(SECRETS)
    return [d for d in docs if d["apiVersion"] != "ray.io/v1"]


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_kubernetes_objects_match_their_schemas(k8s_version):
    objects = kubernetes_objects()
    assert {o["kind"] for o in objects} == {
        "Service",
        "PersistentVolumeClaim",
        "Secret",
        "NetworkPolicy",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, k8s_version, strict=True)


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_pod_templates_match_the_kubernetes_pod_template_schema(k8s_version):
    for name, template in pod_templates(raycluster()).items():
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"star-{name}"},
            "template": template,
        }
        kubernetes_validate.validate(wrapped, k8s_version, strict=True)


def strict_structural(schema: Any) -> Any:
    """The schema with Kubernetes' strict field validation made explicit.

    In a structural schema an object's fields are the declared `properties`; kubectl (strict by
    default) rejects any other field unless `x-kubernetes-preserve-unknown-fields` is set.
    """
    if isinstance(schema, list):
        return [strict_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_structural(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_validator() -> jsonschema.Draft7Validator:
    schema = strict_structural(json.loads(CRD_SCHEMA.read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def crd_errors(validator: jsonschema.Draft7Validator, obj: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    )


def test_raycluster_matches_the_kuberay_crd_schema(crd_validator):
    assert crd_errors(crd_validator, raycluster()) == []


def test_crd_check_rejects_unknown_fields_and_wrong_types(crd_validator):
    cluster = raycluster()
    typo = copy.deepcopy(cluster)
    typo["spec"]["headGroupSpec"]["rayStartParam"] = {"num-cpus": "0"}
    container_typo = copy.deepcopy(cluster)
    ray_container(container_typo["spec"]["workerGroupSpecs"][0]["template"])["imagee"] = "x"
    wrong_type = copy.deepcopy(cluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["replicas"] = "2"
    bad_mode = copy.deepcopy(cluster)
    bad_mode["spec"]["authOptions"]["mode"] = "tokens"
    bad_quantity = copy.deepcopy(cluster)
    ray_container(bad_quantity["spec"]["headGroupSpec"]["template"])["resources"]["limits"][
        "cpu"
    ] = "four"

    assert any("'rayStartParam' was unexpected" in e for e in crd_errors(crd_validator, typo))
    assert any("'imagee' was unexpected" in e for e in crd_errors(crd_validator, container_typo))
    assert crd_errors(crd_validator, wrong_type) == [
        "spec.workerGroupSpecs.0.replicas: '2' is not of type 'integer'"
    ]
    assert any("'tokens' is not one of" in e for e in crd_errors(crd_validator, bad_mode))
    (quantity_error,) = crd_errors(crd_validator, bad_quantity)
    assert quantity_error.startswith("spec.headGroupSpec.template.spec.containers.0.resources.")
    assert "'four' does not match" in quantity_error


# --- the fields that matter ------------------------------------------------------------------


def test_ray_version_and_token_authentication():
    spec = raycluster()["spec"]
    assert spec["rayVersion"] == RAY_VERSION
    assert Version(RAY_VERSION) >= RAY_TOKEN_AUTH_SINCE
    assert spec["authOptions"] == {"mode": "token"}


def test_images_are_this_version_of_the_project_cpu_and_cuda():
    cluster = raycluster()
    images = {name: ray_container(t)["image"] for name, t in pod_templates(cluster).items()}
    repository = images["head"].rsplit(":", 1)[0]
    assert images == {
        "head": f"{repository}:{project_version()}-cpu",
        "learner": f"{repository}:{project_version()}-cpu",
        "cpu": f"{repository}:{project_version()}-cpu",
        "gpu": f"{repository}:{project_version()}-cuda12",
    }
    assert repository.endswith("/star-lopt")


def test_head_schedules_no_ray_work_and_keeps_the_dashboard_on_loopback():
    params = raycluster()["spec"]["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert params["dashboard-host"] == "127.0.0.1"


def kuberay_head_args(container: dict[str, Any], ray_start: str) -> str:
    """The shell line KubeRay (v1.x, BuildPod) runs in the head container: the user's command
    and args, each item as " item ", then `&&` the ulimit and the generated `ray start`."""
    cmd = "".join(f" {item} " for item in container.get("command", []) + container.get("args", []))
    return f"{cmd} && ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {ray_start}"


@pytest.mark.processes  # runs bash -n
def test_head_command_starts_star_serve_in_the_background_before_ray_start():
    cluster = raycluster()
    head = ray_container(cluster["spec"]["headGroupSpec"]["template"])
    (command,) = head["command"]
    assert "args" not in head
    # KubeRay only adds its `ray start` when the command has none of its own.
    assert "ray start" not in command
    assert command.startswith("(star-head ") and command.endswith(" &)")
    line = kuberay_head_args(head, "ray start --head --num-cpus=0 --block")
    assert subprocess.run(["bash", "-n", "-c", line]).returncode == 0  # valid shell

    argv = shlex.split(command[1:-2])
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    mounts = {m["name"]: m["mountPath"] for m in head["volumeMounts"]}
    assert argv[0] == "star-head"
    assert flags == {
        "--host": "0.0.0.0",
        "--port": str(GRPC_PORT),
        "--data-dir": HEAD_DATA_DIR,
        "--tls-cert": f"{mounts['star-api-tls']}/tls.crt",
        "--tls-key": f"{mounts['star-api-tls']}/tls.key",
        "--max-jobs": "8",
    }
    assert head["lifecycle"]["preStop"]["exec"]["command"] == ["star-head", "--stop"]


def test_head_gets_the_api_token_from_the_secret_and_tls_files_from_a_secret_volume():
    docs = load_documents(SECRETS)
    template = raycluster()["spec"]["headGroupSpec"]["template"]
    head = ray_container(template)
    token_ref = env_of(head)["STAR_TOKEN"]["valueFrom"]["secretKeyRef"]
    token_secret = one(docs, "Secret", token_ref["name"])
    assert token_ref == {"name": "star-api-token", "key": "token"}
    assert token_ref["key"] in token_secret["stringData"]

    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    tls_secret = one(docs, "Secret", volumes["star-api-tls"]["secret"]["secretName"])
    assert tls_secret["type"] == "kubernetes.io/tls"
    assert set(tls_secret["stringData"]) == {"tls.crt", "tls.key"}
    # Group-readable only, for the group the pod's files belong to (fsGroup).
    assert volumes["star-api-tls"]["secret"]["defaultMode"] == 0o440
    assert template["spec"]["securityContext"]["fsGroup"] == RAY_GID
    tls_mount = next(m for m in head["volumeMounts"] if m["name"] == "star-api-tls")
    assert tls_mount["readOnly"] is True


def test_data_directory_is_the_persistent_volume_claim():
    docs = load_documents(RAYCLUSTER)
    template = raycluster()["spec"]["headGroupSpec"]["template"]
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    claim = one(
        docs, "PersistentVolumeClaim", volumes["star-data"]["persistentVolumeClaim"]["claimName"]
    )
    mounts = {m["name"]: m for m in ray_container(template)["volumeMounts"]}
    assert mounts["star-data"]["mountPath"] == HEAD_DATA_DIR
    assert not mounts["star-data"].get("readOnly", False)
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_service_selects_the_head_pod_and_reaches_the_grpc_port():
    cluster = raycluster()
    service = one(load_documents(RAYCLUSTER), "Service", "star-api")
    head = ray_container(cluster["spec"]["headGroupSpec"]["template"])
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    # The labels KubeRay puts on the head pod of this cluster.
    assert service["spec"]["selector"] == {
        "ray.io/cluster": cluster["metadata"]["name"],
        "ray.io/node-type": "head",
    }
    (port,) = service["spec"]["ports"]
    assert port["port"] == GRPC_PORT
    assert ports[port["targetPort"]] == GRPC_PORT
    assert ports["gcs-server"] == 6379 and ports["dashboard"] == 8265


def test_every_ray_container_exposes_its_metrics_port():
    cluster = raycluster()
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        container = ray_container(group["template"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == METRICS_PORT
        assert group["rayStartParams"]["metrics-export-port"] == str(METRICS_PORT)


def test_pods_run_as_the_non_root_ray_user():
    for template in pod_templates(raycluster()).values():
        context = template["spec"]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"]) == (RAY_UID, RAY_GID)


def restricted_violations(name: str, template: dict[str, Any]) -> list[str]:
    """What keeps a pod template out of a `restricted` namespace (Pod Security Standards), for
    the fields these templates can set; every container must set its own securityContext."""
    spec = template["spec"]
    found = [f"{name}: {key}" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"{name}: volume {volume['name']} is {kinds}")
    for container in spec["containers"] + spec.get("initContainers", []):
        where = f"{name}/{container['name']}"
        context = container.get("securityContext", {})
        for key, value in RESTRICTED_CONTAINER.items():
            if context.get(key) != value:
                found.append(f"{where}: securityContext.{key} is {context.get(key)!r}")
        if context.get("privileged") or context.get("capabilities", {}).get("add"):
            found.append(f"{where}: privileged or added capabilities")
        if context.get("runAsUser", spec["securityContext"].get("runAsUser")) == 0:
            found.append(f"{where}: runs as root")
        found += [f"{where}: hostPort" for p in container.get("ports", []) if "hostPort" in p]
    return found


def test_every_container_may_run_in_a_restricted_namespace():
    templates = pod_templates(raycluster())
    assert set(templates) == {"head", "learner", "cpu", "gpu"}
    for name, template in templates.items():
        assert restricted_violations(name, template) == []


def test_restricted_check_catches_a_container_without_its_security_context():
    template = copy.deepcopy(pod_templates(raycluster())["cpu"])
    del ray_container(template)["securityContext"]["seccompProfile"]
    template["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    template["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    found = restricted_violations("cpu", template)
    assert "cpu/ray-worker: securityContext.seccompProfile is None" in found
    assert sum(f.startswith("cpu/sidecar: securityContext.") for f in found) == 4
    assert "cpu: volume host is {'hostPath'}" in found


def test_cpu_is_requested_not_limited_and_is_rays_cpu_count():
    """No CPU limit to throttle the pods; Ray's CPU count is the request (head and learner
    group: 0, so that no worker lands there; their cores serve the GCS / the learners)."""
    cluster = raycluster()
    groups = {"head": cluster["spec"]["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]})
    for name, group in groups.items():
        resources = ray_container(group["template"])["resources"]
        assert "cpu" not in resources.get("limits", {}), name
        assert resources["limits"]["memory"] == resources["requests"]["memory"], name
        num_cpus = group["rayStartParams"]["num-cpus"]
        if name in ("head", "learner"):
            assert num_cpus == "0" and int(resources["requests"]["cpu"]) >= 1, name
        else:
            assert num_cpus == resources["requests"]["cpu"], name


def test_gpu_group_asks_kubernetes_and_ray_for_one_gpu_and_marks_its_nodes():
    group = worker_group(raycluster(), "gpu")
    spec = group["template"]["spec"]
    container = ray_container(group["template"])
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
    assert group["rayStartParams"]["num-gpus"] == resources["limits"]["nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    argv = ray_start_argv(group["rayStartParams"])
    (resources_flag,) = [a for a in argv if a.startswith("--resources=")]
    assert json.loads(resources_flag.removeprefix("--resources=")) == {"star_gpu_node": 1}
    assert env_of(container)["XLA_PYTHON_CLIENT_PREALLOCATE"]["value"] == "false"


def test_cpu_group_has_cpus_and_no_gpu():
    group = worker_group(raycluster(), "cpu")
    resources = ray_container(group["template"])["resources"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})
    assert int(group["rayStartParams"]["num-cpus"]) >= 1
    assert "num-gpus" not in group["rayStartParams"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


# --- the NetworkPolicy ------------------------------------------------------------------------


def network_policy() -> dict[str, Any]:
    return one(load_documents(RAYCLUSTER), "NetworkPolicy")


def ingress_sources(policy: dict[str, Any], port_name: str) -> list[Any]:
    """The `from` of every ingress rule that admits traffic to the named container port (a rule
    without `ports` admits every port; a rule without `from` admits every source: None)."""
    sources = []
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports is None or any(p["port"] == port_name for p in ports):
            sources.append(rule.get("from"))
    return sources


def test_network_policy_covers_every_pod_of_the_cluster_for_ingress():
    cluster = raycluster()
    spec = network_policy()["spec"]
    assert spec["podSelector"] == {"matchLabels": {"ray.io/cluster": cluster["metadata"]["name"]}}
    assert spec["policyTypes"] == ["Ingress"]


def test_rays_ports_admit_only_the_clusters_own_pods():
    own_pods = [{"podSelector": {"matchLabels": {"ray.io/cluster": "star"}}}]
    head = ray_container(raycluster()["spec"]["headGroupSpec"]["template"])
    ray_ports = {p["name"] for p in head["ports"]} - {"star-grpc", "metrics"}
    ray_ports -= {"as-metrics", "dash-metrics"}
    assert ray_ports == {"gcs-server", "dashboard", "client"}
    # Ports no container names (raylets, object managers, workers) fall under the same rule.
    policy = network_policy()
    for port in [*ray_ports, "some-unnamed-port"]:
        assert ingress_sources(policy, port) == [own_pods], port


def test_grpc_api_is_reachable_as_the_service_exposes_it_and_metrics_by_prometheus():
    service = one(load_documents(RAYCLUSTER), "Service", "star-api")
    policy = network_policy()
    (port,) = service["spec"]["ports"]
    assert None in ingress_sources(policy, port["targetPort"])  # from anywhere, as the Service
    for metrics_port in ("metrics", "as-metrics", "dash-metrics"):
        sources = ingress_sources(policy, metrics_port)
        assert [{"namespaceSelector": {}}] in sources and None not in sources, metrics_port
