#!/usr/bin/env bash
# The local demo (`make demo`): a blue-green release with shift-weight against
# local stand-ins for the cloud, on loopback only:
#   - moto_server, the AWS emulator, holding a Route53 zone with a weighted
#     record group (blue 100 / green 0);
#   - a small HTTP health endpoint that the gates probe, whose answers the
#     script controls.
# It runs a dry run, a gated canary to green, two releases back to blue whose
# gate fails (before any change: nothing moves; after the first step: automatic
# rollback), explicit weights, and --rollback; then checks the weights with the
# aws CLI and prints a summary and the state file's journal. It exits 0 only
# when every step ended as expected. Everything it starts is stopped and its
# temp folder removed on exit; a copy of the final state file is kept in
# .demo/switchyard-state.json (git-ignored).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${SWITCHYARD_BIN_DIR:-$ROOT/target/release}
SW=$BIN/shift-weight
VH=$BIN/verify-health
SY=$BIN/switchyard

for tool in moto_server aws python3; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run 'make deps'" >&2; exit 2; }
done
for exe in "$SW" "$VH" "$SY"; do
  [[ -x $exe ]] || { echo "demo: $exe is not built; run 'make release' (make demo does)" >&2; exit 2; }
done

# --- setup: temp folder, cleanup ----------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
MOTO_PID=""
HEALTH_PID=""
cleanup() {
  local pid
  for pid in "$HEALTH_PID" "$MOTO_PID"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n==> %s\n' "$*"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether URL answers with any HTTP status.
answers() {
  python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
PY
}

# Waits until URL answers any HTTP status, while process PID is alive.
wait_http() {
  local url=$1 pid=$2 what=$3 log=$4
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { echo "demo: $what exited; its log:" >&2; cat "$log" >&2; exit 1; }
    answers "$url" && return 0
    sleep 0.2
  done
  echo "demo: $what did not answer at $url within 30s" >&2
  exit 1
}

# Only moto, with dummy credentials; never a real account, never a config file.
MOTO_PORT=$(free_port)
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_DEFAULT_PROFILE
# No proxy either: every connection goes straight to 127.0.0.1.
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export NO_COLOR=1

section "starting moto_server (AWS emulator) on 127.0.0.1:$MOTO_PORT"
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
MOTO_PID=$!
wait_http "$AWS_ENDPOINT_URL/moto-api/" "$MOTO_PID" moto_server "$TMP/moto.log"
echo "moto_server is up (pid $MOTO_PID)"

# The health endpoint answers GET /health according to the file $TMP/health-mode:
# "ok" -> 200, "fail" -> 500, a number N -> 200 for the next N requests, then 500.
HEALTH_PORT=$(free_port)
HEALTH_URL=http://127.0.0.1:$HEALTH_PORT/health
cat >"$TMP/health.py" <<'PY'
import http.server, pathlib, sys

mode_file = pathlib.Path(sys.argv[2])

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mode = mode_file.read_text().strip() if mode_file.exists() else "fail"
        if mode.isdigit():
            ok = int(mode) > 0
            if ok:
                mode_file.write_text(str(int(mode) - 1))
        else:
            ok = mode == "ok"
        body = b"ok\n" if ok else b"broken\n"
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("health: " + fmt % args + "\n")

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
PY
echo ok >"$TMP/health-mode"
section "starting the health endpoint $HEALTH_URL"
python3 "$TMP/health.py" "$HEALTH_PORT" "$TMP/health-mode" 2>"$TMP/health.log" &
HEALTH_PID=$!
wait_http "$HEALTH_URL" "$HEALTH_PID" "the health endpoint" "$TMP/health.log"
echo "health endpoint is up (pid $HEALTH_PID), answering 200"

# --- the record group -----------------------------------------------------------

ZONE=demo.switchyard.test
RECORD=app.$ZONE
section "creating hosted zone $ZONE and the weighted record group $RECORD (aws CLI)"
ZONE_ID=$(aws route53 create-hosted-zone --name "$ZONE" --caller-reference "demo-$$-$RANDOM" \
  --query HostedZone.Id --output text)
ZONE_ID=${ZONE_ID#/hostedzone/}
cat >"$TMP/records.json" <<JSON
{"Comment": "switchyard demo: blue takes all traffic",
 "Changes": [
  {"Action": "CREATE", "ResourceRecordSet": {"Name": "$RECORD", "Type": "A", "SetIdentifier": "blue",
   "Weight": 100, "TTL": 1, "ResourceRecords": [{"Value": "192.0.2.10"}]}},
  {"Action": "CREATE", "ResourceRecordSet": {"Name": "$RECORD", "Type": "A", "SetIdentifier": "green",
   "Weight": 0, "TTL": 1, "ResourceRecords": [{"Value": "192.0.2.20"}]}}]}
JSON
aws route53 change-resource-record-sets --hosted-zone-id "$ZONE_ID" \
  --change-batch "file://$TMP/records.json" --query ChangeInfo.Status --output text >/dev/null
echo "zone $ZONE_ID: $RECORD A blue=100 (192.0.2.10), green=0 (192.0.2.20), TTL 1"

show_records() {
  aws route53 list-resource-record-sets --hosted-zone-id "$ZONE_ID" \
    --query "ResourceRecordSets[?Type=='A'].[SetIdentifier,Weight,TTL,ResourceRecords[0].Value]" \
    --output text
}

# --- the steps ------------------------------------------------------------------

STATE=$TMP/switchyard-state.json
ROUTE=(--zone-id "$ZONE_ID" --record-name "$RECORD" --state "$STATE")
GATE=(--gate-url "$HEALTH_URL" --gate-interval 200ms --gate-successes 2 --gate-failures 2 --settle 1s)

ACTIONS=() EXPECTED=() CODES=() TIMES=()
FAILED=0

# step LABEL EXPECTED_EXIT ARGS...: runs shift-weight, records exit code and time.
step() {
  local label=$1 expected=$2 start end rc
  shift 2
  echo "\$ shift-weight $*"
  start=${EPOCHREALTIME/./}
  set +e
  "$SW" "$@"
  rc=$?
  set -e
  end=${EPOCHREALTIME/./}
  # Ctrl-C reaches shift-weight too; it stops cleanly with 130, and so do we.
  [[ $rc -ne 130 ]] || { echo "demo: interrupted" >&2; exit 130; }
  ACTIONS+=("$label") EXPECTED+=("$expected") CODES+=("$rc") TIMES+=($(((end - start) / 1000)))
  if [[ $rc -eq $expected ]]; then
    echo "-> exit $rc, as expected"
  else
    echo "-> exit $rc, EXPECTED $expected" >&2
    FAILED=1
  fi
}

section "1. dry run: the plan for a gated canary to green (changes nothing)"
step "dry run" 0 "${ROUTE[@]}" --to green --steps 10,50,100 "${GATE[@]}" --dry-run

section "2a. verify-health: is green healthy? (the verdict goes into the state file)"
echo "\$ verify-health --stack green --url $HEALTH_URL --interval 200ms"
"$VH" --stack green --url "$HEALTH_URL" --interval 200ms --state "$STATE"

section "2. canary to green through 10%, 50%, 100%, with a health gate after each step"
step "canary to green 10,50,100" 0 "${ROUTE[@]}" --to green --steps 10,50,100 "${GATE[@]}"

section "3. the aws CLI's view of the records (set id, weight, TTL, address)"
show_records

section "4. a release back to blue while the health endpoint fails: nothing moves (exit 1)"
echo "the health endpoint now answers 500"
echo fail >"$TMP/health-mode"
step "to blue, gate fails first" 1 "${ROUTE[@]}" --to blue --steps 10,50,100 "${GATE[@]}"
show_records

section "5. a release back to blue whose gate fails after step 1: automatic rollback (exit 4)"
echo "the health endpoint now answers 200 twice (the gate before any change), then 500"
echo 2 >"$TMP/health-mode"
step "to blue, gate fails at 10%" 4 "${ROUTE[@]}" --to blue --steps 10,50,100 "${GATE[@]}"
show_records

section "6. explicit weights for every member: blue=25, green=75"
echo ok >"$TMP/health-mode"
step "explicit weights 25/75" 0 "${ROUTE[@]}" --weights blue=25,green=75 "${GATE[@]}"

section "7. --rollback: back to the weights recorded before the last shift"
step "rollback" 0 "${ROUTE[@]}" --rollback

# --- checks and summary --------------------------------------------------------------

section "summary"
printf '  %-28s %8s %6s %9s\n' action expected exit time
for i in "${!ACTIONS[@]}"; do
  printf '  %-28s %8s %6s %6s ms\n' "${ACTIONS[$i]}" "${EXPECTED[$i]}" "${CODES[$i]}" "${TIMES[$i]}"
done

FINAL=$(show_records | sort | awk '{printf "%s%s=%s", sep, $1, $2; sep=","}')
echo
echo "  final weights (aws CLI): $FINAL"
if [[ $FINAL != "blue=0,green=100" ]]; then
  echo "  EXPECTED blue=0,green=100" >&2
  FAILED=1
fi

# The state file lives in the temp folder, which is removed on exit; keep a copy.
mkdir -p "$ROOT/.demo"
cp "$STATE" "$ROOT/.demo/switchyard-state.json"
echo "  state file: $STATE (removed on exit; copy kept in .demo/switchyard-state.json)"
echo
echo "  journal:"
python3 - "$STATE" <<'PY'
import json, sys

doc = json.load(open(sys.argv[1]))
print(f"  schema {doc['schema']}, {len(doc['journal'])} entries")
for e in doc["journal"]:
    print(f"    {e['action']:<20} {e['outcome']:<12} {e.get('detail', '')}")
PY

echo
echo "  release history (switchyard history):"
"$SY" history --state "$STATE" | sed 's/^/    /'

echo
if [[ $FAILED -ne 0 ]]; then
  echo "demo: FAILED (see above)" >&2
  exit 1
fi
echo "demo: every step ended as expected"
