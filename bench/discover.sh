#!/usr/bin/env bash
# `airlock images` over a tree of 10 charts (each with a named-template image, a subchart and
# an image in args), with helm (the fixtures/helm/helm shim, or HELM=path) and without.
# Usage: bash bench/discover.sh   (after cargo build --release -p airlock)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
airlock=${AIRLOCK:-$root/target/x86_64-unknown-linux-gnu/release/airlock}
helm=${HELM:-$root/fixtures/helm/helm}
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
for i in $(seq 1 10); do
  c=$dir/charts/app$i
  mkdir -p "$c/templates" "$c/charts/db/templates"
  printf 'apiVersion: v2\nname: app%s\nversion: 0.1.0\nappVersion: "1.%s.0"\ndependencies:\n  - {name: db, version: 0.1.0}\n' "$i" "$i" > "$c/Chart.yaml"
  printf 'image: {repository: ghcr.io/example/app%s}\nsidecar: {repository: quay.io/example/side, tag: "%s"}\n' "$i" "$i" > "$c/values.yaml"
  printf '{{- define "app.image" -}}{{ .Values.image.repository }}:{{ printf "v%%s" .Chart.AppVersion }}{{- end -}}\n' > "$c/templates/_helpers.tpl"
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: "{{ .Release.Name }}"}\nspec:\n  containers:\n    - name: app\n      image: {{ include "app.image" . | quote }}\n      args: ["--sidecar-image={{ .Values.sidecar.repository }}:{{ .Values.sidecar.tag }}"]\n' > "$c/templates/pod.yaml"
  printf 'apiVersion: v2\nname: db\nversion: 0.1.0\n' > "$c/charts/db/Chart.yaml"
  printf 'image: {repository: docker.io/library/postgres, tag: "16.%s"}\n' "$i" > "$c/charts/db/values.yaml"
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: "{{ .Release.Name }}-db"}\nspec:\n  containers:\n    - name: db\n      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"\n' > "$c/charts/db/templates/pod.yaml"
done
printf "name: bench\nversion: '1'\ndiscover: [charts/]\n" > "$dir/airlock.yaml"
for mode in "--helm $helm" "--no-helm"; do
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  n=$("$airlock" images -f "$dir/airlock.yaml" $mode --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["images"]), "images,", len(d["unresolved"]), "unresolved")')
  end=$(date +%s.%N)
  printf '%-10s %s  %.2f s\n' "${mode%% *}" "$n" "$(echo "$end - $start" | bc)"
done
