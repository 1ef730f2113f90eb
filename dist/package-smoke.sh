#!/usr/bin/env bash
# Builds the Debian package from the release binaries, installs it, starts the installed server as
# its system user with the installed configuration, checks it serves (HTTP health, an MQTT publish
# with the installed CLI), stops it with SIGTERM by PID and removes the package again.
# Needs root, cargo-deb, and `cargo build --release -p quicft-server -p quicft-client` done.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo deb -p quicft-server --no-build --locked --output target/debian/quicft.deb >/dev/null
dpkg -i target/debian/quicft.deb >/dev/null
trap 'dpkg --purge quicft >/dev/null 2>&1 || true' EXIT
test -x /usr/bin/quicft-server && test -x /usr/bin/quicft
getent passwd quicft >/dev/null
/usr/bin/quicft-server check-config --config /etc/quicft/quicft.toml >/dev/null
log="$(mktemp)"
# setpriv execs the server itself (runuser would stay as its parent), so $! is the server's PID.
setpriv --reuid=quicft --regid=quicft --init-groups \
  /usr/bin/quicft-server --config /etc/quicft/quicft.toml 2>"$log" &
pid=$!
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "package smoke: the server exited"; exit 1; }
  sleep 0.1
done
curl -fsS http://127.0.0.1:8080/healthz | grep -q '"ok"'
/usr/bin/quicft pub --transport tcp --server 127.0.0.1:1883 -t smoke/pkg -m installed --qos 1
test -f /var/lib/quicft/certs/ca.pem  # written by the quicft user into its data dir
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
if [ "$rc" != 0 ]; then cat "$log"; echo "package smoke: exit $rc after SIGTERM"; exit 1; fi
echo "package smoke: installed, served and stopped"
