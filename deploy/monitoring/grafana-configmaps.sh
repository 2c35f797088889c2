#!/usr/bin/env bash
# grafana-configmaps.sh: one ConfigMap per Grafana dashboard, labelled for Grafana's sidecar.
#
#   deploy/monitoring/grafana-configmaps.sh NAMESPACE DASHBOARD.json...
#
# Kubernetes refuses a ConfigMap whose data passes 1 MiB, and Ray's generated dashboards alone
# are about 1.5 MB, so every dashboard gets a ConfigMap of its own: star-grafana-<file name
# without .json, in lower case, other characters than [a-z0-9.-] as "-">, with the file as its
# only key and the label grafana_dashboard=1 (what kube-prometheus-stack's Grafana looks for).
# A dashboard over the bound is refused before anything is created. Running it again replaces
# the ConfigMaps it made (after Ray regenerates its dashboards). Uses kubectl's current context.
set -euo pipefail

# Kubernetes' bound on the data of one ConfigMap, in bytes.
max_bytes=1048576
label="grafana_dashboard=1"

if [[ $# -lt 2 ]]; then
    echo "usage: $0 NAMESPACE DASHBOARD.json..." >&2
    exit 2
fi
namespace="$1"
shift

for file in "$@"; do
    if [[ ! -f "$file" ]]; then
        echo "$0: $file: no such file" >&2
        exit 1
    fi
    size=$(wc -c <"$file")
    if ((size > max_bytes)); then
        echo "$0: $file: $size bytes, more than a ConfigMap holds ($max_bytes)" >&2
        exit 1
    fi
done

for file in "$@"; do
    base="$(basename "$file" .json)"
    name="star-grafana-$(printf '%s' "$base" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9.-' '-')"
    kubectl delete configmap "$name" -n "$namespace" --ignore-not-found
    kubectl create configmap "$name" -n "$namespace" --from-file="$file"
    kubectl label configmap "$name" -n "$namespace" "$label"
done
