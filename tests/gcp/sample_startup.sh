#!/bin/bash
# A small startup script for the stand-in's tests: what a real VM's script does, in miniature.
# It learns who it is from the metadata server, installs a package, looks at its GPUs, calls the
# Compute API as its service account, then serves HTTP from the job's container image, and
# records a preemption notice when GCE sends one.
set -euo pipefail

# A test script: it talks to the stand-in only, never to Google (the stand-in sets both).
metadata="${BURLA_METADATA_URL:?the stand-in sets BURLA_METADATA_URL}/computeMetadata/v1"
compute="${BURLA_GCP_STANDIN:?the stand-in sets BURLA_GCP_STANDIN}/compute/v1"

get() {
    curl -sf -H "Metadata-Flavor: Google" "$metadata/$1"
}

name="$(get instance/name)"
zone="$(get instance/zone)"
zone="${zone##*/}"
project="$(get project/project-id)"
port="$(get instance/attributes/test-port)"
image="$(get instance/attributes/test-image)"
token="$(get instance/service-accounts/default/token | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"

apt-get install -y -q curl ca-certificates

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > gpus.txt
else
    : > gpus.txt
fi

curl -sf -H "Authorization: Bearer $token" \
    "$compute/projects/$project/zones/$zone/instances/$name" > self.json

printf '{"name": "%s", "zone": "%s", "project": "%s"}\n' "$name" "$zone" "$project" > identity.json

# A preemption notice arrives as instance/preempted turning TRUE (a long poll).
(
    while [ "$(get 'instance/preempted?wait_for_change=true&timeout_sec=30')" != "TRUE" ]; do :; done
    echo preempted > preempted.txt
) &

exec docker run --rm -e "VM_NAME=$name" "$image" python -m http.server "$port" --bind 127.0.0.1
