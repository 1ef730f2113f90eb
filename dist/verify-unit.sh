#!/usr/bin/env bash
# Checks dist/quicft.service with systemd-analyze against a built quicft-server (given as $1):
# any message fails, since systemd-analyze exits 0 on directives it ignores.
set -euo pipefail
bin="$(realpath "$1")"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s#/usr/bin/quicft-server#$bin#" "$(dirname "$0")/quicft.service" > "$dir/quicft.service"
out="$(systemd-analyze verify "$dir/quicft.service" 2>&1)" || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify dist/quicft.service:"; echo "$out"; exit 1
fi
echo "dist/quicft.service: verified"
