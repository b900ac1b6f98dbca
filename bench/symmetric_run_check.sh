#!/bin/bash
# What `ray symmetric-run` does on a node that another Ray shares (docs/clusters.md, SLURM: "Why not
# `ray symmetric-run`"). Needs root (for `unshare --pid`); safe on a shared machine: symmetric-run gets a stub
# `ray` on PATH (it calls `ray start` and `ray stop` by name), and the one real `ray stop` runs in a private PID
# namespace, where it sees only the Ray head started there.
#   usage: bash bench/symmetric_run_check.sh        (PYTHON=... to choose the interpreter)
set -u
PY="${PYTHON:-python}"
work=$(mktemp -d /tmp/symrun-check-XXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
cat > "$work/bin/ray" <<'EOF'
#!/bin/bash
echo "    stub: ray $*" >> "$STUB_LOG"
if [ "$1" = start ]; then exit "${STUB_START_STATUS:-0}"; fi
EOF
chmod +x "$work/bin/ray"
export STUB_LOG="$work/stub.log" STUB_BIN="$work/bin" WORK="$work" PY
: > "$STUB_LOG"
port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

echo "== 1. the head's 'ray start' fails (the stub exits 1); no other Ray in this PID namespace"
STUB_START_STATUS=1 PATH="$STUB_BIN:$PATH" unshare --pid --fork --mount-proc \
  "$PY" -m ray.scripts.scripts symmetric-run --address "127.0.0.1:$(port)" -- echo THE-SEARCH 2>&1 | sed 's/^/    /'
echo "    symmetric-run's exit code: ${PIPESTATUS[0]}"
cat "$STUB_LOG"; : > "$STUB_LOG"

echo "== 2. another Ray head runs (its own --temp-dir and ports); then symmetric-run; then a bare 'ray stop'"
export P1=$(port) P2=$(port) P3=$(port) P4=$(port)
unshare --pid --fork --mount-proc bash -c '
  [ $$ -eq 1 ] || { echo "not in a private PID namespace: stopping"; exit 99; }
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$("$PY" -c "import secrets; print(secrets.token_hex(32))")
  "$PY" -m ray.scripts.scripts start --head --port="$P1" --temp-dir="$WORK/other-ray" --include-dashboard=false \
     --num-cpus=1 --dashboard-agent-listen-port="$P2" --ray-client-server-port="$P3" >/dev/null 2>&1
  echo "    the other Ray: $(pgrep -c raylet) raylet, $(pgrep -c gcs_server) gcs_server"
  PATH="$STUB_BIN:$PATH" "$PY" -m ray.scripts.scripts symmetric-run --address "127.0.0.1:$P4" -- echo THE-SEARCH \
    2>&1 | sed "s/^/    /"
  echo "    symmetric-run'"'"'s exit code: ${PIPESTATUS[0]}"
  echo "    a bare ray stop, as symmetric-run runs it when its command ends:"
  "$PY" -m ray.scripts.scripts stop 2>&1 | grep -o "Stopped all [0-9]* Ray processes" | sed "s/^/    /"
  sleep 1
  echo "    the other Ray after it: $(pgrep -c raylet) raylet, $(pgrep -c gcs_server) gcs_server"
'
cat "$STUB_LOG"
