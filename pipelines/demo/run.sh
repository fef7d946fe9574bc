#!/usr/bin/env bash
# The local demo (`make demo`): two releases of a small service, run as a CI
# pipeline runs them, on local stand-ins for the cloud (loopback only):
#   - moto_server, the AWS emulator: the base image, the baked image, the
#     standby Auto Scaling group with its launch template and CPU alarms, a
#     target group, and the Route53 weighted record group of the service;
#   - HAProxy (Debian's package) in front of the service's local processes,
#     taking a steady load that counts every answer by version and every
#     failed request;
#   - version 1 of the sample service (pipelines/demo/sample_service.py) as
#     blue, taking all the traffic.
# Release 2: bake-ami -> deploy-standby (asg driver in moto, and command driver
# starting green's local process) -> register-host -> verify-health ->
# shift-weight through HAProxy (real traffic) and Route53 (moto), 10, 50, 100
# with gates -> verify-health -> deploy-standby retire (blue taken down).
# Release 3 goes to blue and breaks under traffic: its gate fails mid-shift and
# shift-weight rolls it back by itself (exit 4).
# It ends with a table (each step, its exit code and time), the requests each
# version served, the failed requests (must be 0) and the release history from
# the state file, a copy of which is kept in .demo/switchyard-state.json
# (git-ignored). It exits 0 only when every step ended as expected and no
# request failed. Everything it starts is stopped and its temp folder removed.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${SWITCHYARD_BIN_DIR:-$ROOT/target/release}
SERVICE_PY=$ROOT/pipelines/demo/sample_service.py
LOAD_PY=$ROOT/pipelines/demo/load.py

for tool in moto_server aws python3 haproxy; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing; run 'make deps'" >&2; exit 2; }
done
for exe in bake-ami deploy-standby register-host verify-health shift-weight switchyard; do
  [[ -x $BIN/$exe ]] || { echo "demo: $BIN/$exe is not built; run 'make release' (make demo does)" >&2; exit 2; }
done

# --- setup: temp folder, cleanup ----------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-demo.XXXXXX")
PIDS=()
cleanup() {
  local pid f
  for f in "$TMP"/*.pid; do
    [[ -e $f ]] && python3 "$SERVICE_PY" --stop "$f" >/dev/null 2>&1 || true
  done
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
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

# Waits until URL answers any HTTP status, while process PID is alive.
wait_http() {
  local url=$1 pid=$2 what=$3 log=$4
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { echo "demo: $what exited; its log:" >&2; cat "$log" >&2; exit 1; }
    curl -s -o /dev/null -m 1 "$url" && return 0
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
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export NO_COLOR=1
export SWITCHYARD_STATE=$TMP/switchyard-state.json SWITCHYARD_NO_HOOKS=1
SERVICE=demo-api

section "starting moto_server (AWS emulator) on 127.0.0.1:$MOTO_PORT"
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$TMP/moto.log" 2>&1 &
PIDS+=($!)
wait_http "$AWS_ENDPOINT_URL/moto-api/" "${PIDS[-1]}" moto_server "$TMP/moto.log"
echo "moto_server is up"

# --- the service's local processes, behind HAProxy --------------------------------

# Each color serves on its own port; the command driver's templates read it.
echo "$(free_port)" >"$TMP/blue.port"
echo "$(free_port)" >"$TMP/green.port"
BLUE_PORT=$(cat "$TMP/blue.port") GREEN_PORT=$(cat "$TMP/green.port")
FRONT_PORT=$(free_port)
# deploy-standby --driver command: how a color is brought up, down and found.
# (The driver single-quotes what it puts in for {color} and {version}.)
UP="python3 $SERVICE_PY --daemon --port \$(cat $TMP/{color}.port) --version {version} \
--pid-file $TMP/{color}.pid --log-file $TMP/{color}.log \$(cat $TMP/{version}.flags 2>/dev/null || true)"
DOWN="python3 $SERVICE_PY --stop $TMP/{color}.pid"
ENDPOINTS="echo http://127.0.0.1:\$(cat $TMP/{color}.port)"
COMMAND_DRIVER=(--driver command --service "$SERVICE" --up "$UP" --down "$DOWN" --endpoints "$ENDPOINTS")

cat >"$TMP/haproxy.cfg" <<CFG
global
  stats socket $TMP/haproxy.sock mode 600 level admin
  server-state-file $TMP/haproxy.state
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  load-server-state-from-file global
frontend web
  bind 127.0.0.1:$FRONT_PORT
  default_backend app
backend app
  balance roundrobin
  server blue1 127.0.0.1:$BLUE_PORT weight 100
  server green1 127.0.0.1:$GREEN_PORT weight 0
CFG

STATE=$SWITCHYARD_STATE
STEPS=() CODES=() EXPECTED=() TIMES=()
FAILED=0

# run LABEL EXPECTED_EXIT COMMAND...: runs a step, records exit code and time.
run() {
  local label=$1 expected=$2 start end rc
  shift 2
  echo "\$ ${*/#$BIN\//}"
  start=${EPOCHREALTIME/./}
  set +e
  "$@"
  rc=$?
  set -e
  end=${EPOCHREALTIME/./}
  [[ $rc -ne 130 ]] || { echo "demo: interrupted" >&2; exit 130; }
  STEPS+=("$label") EXPECTED+=("$expected") CODES+=("$rc") TIMES+=($(((end - start) / 1000)))
  if [[ $rc -eq $expected ]]; then
    echo "-> exit $rc, as expected"
  else
    echo "-> exit $rc, EXPECTED $expected" >&2
    FAILED=1
  fi
}

section "version 1 goes live as blue (deploy-standby --driver command), HAProxy in front on 127.0.0.1:$FRONT_PORT"
run "deploy v1 (blue, command)" 0 "$BIN/deploy-standby" "${COMMAND_DRIVER[@]}" --color blue --app-version 1
python3 - "$STATE" <<'PY'
import json, sys
# Blue is the live stack of an earlier release: mark it so, as that release's
# shift-weight would have.
d = json.load(open(sys.argv[1]))
d["stacks"]["blue"]["role"] = "active"
json.dump(d, open(sys.argv[1], "w"), indent=2)
PY
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$FRONT_PORT/" "${PIDS[-1]}" haproxy "$TMP/haproxy.log"
echo "HAProxy serves $(curl -s "http://127.0.0.1:$FRONT_PORT/")"

python3 "$LOAD_PY" "http://127.0.0.1:$FRONT_PORT/" "$TMP/load.json" --threads 4 --rate 400 &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
echo "load: 400 requests/s through HAProxy, counting every answer (pid $LOAD_PID)"

# --- the AWS side in moto ----------------------------------------------------------

ZONE=demo.switchyard.test
RECORD=api.$ZONE
section "AWS side (aws CLI, in moto): hosted zone, weighted records, base image, target group"
ZONE_ID=$(aws route53 create-hosted-zone --name "$ZONE" --caller-reference "demo-$$-$RANDOM" \
  --query HostedZone.Id --output text)
ZONE_ID=${ZONE_ID#/hostedzone/}
aws route53 change-resource-record-sets --hosted-zone-id "$ZONE_ID" --change-batch "{\"Changes\": [
  {\"Action\": \"CREATE\", \"ResourceRecordSet\": {\"Name\": \"$RECORD\", \"Type\": \"A\", \"SetIdentifier\": \"blue\",
   \"Weight\": 100, \"TTL\": 1, \"ResourceRecords\": [{\"Value\": \"192.0.2.10\"}]}},
  {\"Action\": \"CREATE\", \"ResourceRecordSet\": {\"Name\": \"$RECORD\", \"Type\": \"A\", \"SetIdentifier\": \"green\",
   \"Weight\": 0, \"TTL\": 1, \"ResourceRecords\": [{\"Value\": \"192.0.2.20\"}]}}]}" >/dev/null
echo "Route53 zone $ZONE_ID: $RECORD blue=100 green=0"
BASE_AMI=$(aws ec2 register-image --name "debian-12-base-2026.11" --root-device-name /dev/xvda \
  --block-device-mappings '[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":8}}]' --query ImageId --output text)
echo "base image $BASE_AMI (debian-12-base-2026.11)"
VPC=$(aws ec2 describe-vpcs --filters Name=is-default,Values=true --query 'Vpcs[0].VpcId' --output text)
SUBNET=$(aws ec2 describe-subnets --filters "Name=vpc-id,Values=$VPC" --query 'Subnets[0].SubnetId' --output text)
TG=$(aws elbv2 create-target-group --name "$SERVICE-local" --protocol HTTP --port 80 --target-type ip \
  --vpc-id "$VPC" --query 'TargetGroups[0].TargetGroupArn' --output text)
echo "IP target group for the local hosts: $TG"

# moto's instances never stop by themselves: stop a bake's builder as its
# provisioning script's poweroff would.
(
  while sleep 0.3; do
    ids=$(aws ec2 describe-instances --filters Name=tag-key,Values=switchyard:bake-id \
      Name=instance-state-name,Values=running --query 'Reservations[].Instances[].InstanceId' --output text 2>/dev/null || true)
    [[ -n $ids && $ids != None ]] && aws ec2 stop-instances --instance-ids $ids >/dev/null 2>&1 || true
  done
) &
PIDS+=($!)

GATE_GREEN=(--gate-url "http://127.0.0.1:$GREEN_PORT/health" --gate-interval 200ms --gate-successes 3 --gate-failures 1)
GATE_BLUE=(--gate-url "http://127.0.0.1:$BLUE_PORT/health" --gate-interval 200ms --gate-successes 3 --gate-failures 1)
HAPROXY=(--router haproxy --haproxy-socket "$TMP/haproxy.sock" --backend app
  --member blue=blue1 --member green=green1 --server-state-file "$TMP/haproxy.state" --lock-file "$TMP/haproxy.lock")
ROUTE53=(--router route53 --zone-id "$ZONE_ID" --record-name "$RECORD" --settle 1s)

counts() { cat "$TMP/load.json" 2>/dev/null || echo '{}'; }
COUNTS_START=$(counts)

# --- release 2 -------------------------------------------------------------------

section "release 2 (to green)"
run "bake-ami" 0 "$BIN/bake-ami" --service "$SERVICE" --app-version 2 --source-name 'debian-12-base-*' \
  --owner self --success-marker "Enabling fast FPU save and restore... done." --pull ghcr.io/acme/demo-api:2 \
  --manifest "$TMP/manifest.json" --wait-stopped 60s
AMI=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["amis"]["us-east-1"])' "$STATE")
# The AWS side of green (launch template from the baked image, Auto Scaling
# group, CPU alarm policies) is built in moto and recorded in its own state
# file: moto's instances run nothing, and the demo never aims at anything but
# loopback. The local process that really serves green comes next.
run "deploy-standby green (asg, moto)" 0 "$BIN/deploy-standby" --state "$TMP/aws-state.json" \
  --service "$SERVICE" --color green --app-version 2 --image "$AMI" --desired 2 --subnet "$SUBNET" --port 80 \
  --region us-east-1
run "deploy-standby green (command)" 0 "$BIN/deploy-standby" "${COMMAND_DRIVER[@]}" --color green --app-version 2
run "register-host green-1" 0 "$BIN/register-host" join --service "$SERVICE" --provider local --host-id green-1 \
  --address 127.0.0.1 --label provider=local --label region=loopback --target-group "$TG" --port "$GREEN_PORT"
run "verify-health green" 0 "$BIN/verify-health" --stack green --path /health --interval 100ms --attempts 5 \
  --successes 3 --junit "$TMP/verify-green.xml"
run "shift-weight haproxy 10,50,100" 0 "$BIN/shift-weight" "${HAPROXY[@]}" --to green --steps 10,50,100 "${GATE_GREEN[@]}"
run "shift-weight route53 10,50,100" 0 "$BIN/shift-weight" "${ROUTE53[@]}" --to green --steps 10,50,100 "${GATE_GREEN[@]}"
run "verify-health green (promoted)" 0 "$BIN/verify-health" --stack green --path /health --interval 100ms \
  --attempts 5 --successes 3
run "deploy-standby retire blue" 0 "$BIN/deploy-standby" "${COMMAND_DRIVER[@]}" retire --retire-after 0s
COUNTS_MID=$(counts)

# --- release 3: breaks under traffic -------------------------------------------------

section "release 3 (to blue): healthy at first, its health fails once it has served 150 requests"
echo "--breaks-after 150" >"$TMP/3.flags"
run "deploy-standby blue (command)" 0 "$BIN/deploy-standby" "${COMMAND_DRIVER[@]}" --color blue --app-version 3
run "verify-health blue" 0 "$BIN/verify-health" --stack blue --path /health --interval 100ms --attempts 5 --successes 3
run "shift-weight haproxy 10,50,100 (gate fails)" 4 "$BIN/shift-weight" "${HAPROXY[@]}" --to blue \
  --steps 10,50,100 --pause 1s "${GATE_BLUE[@]}"
sleep 1
COUNTS_END=$(counts)

# --- checks and summary -----------------------------------------------------------

section "checks (aws CLI, HAProxy runtime API)"
echo "Route53: $(aws route53 list-resource-record-sets --hosted-zone-id "$ZONE_ID" \
  --query "ResourceRecordSets[?Type=='A'].[SetIdentifier,Weight]" --output text | tr '\t\n' '= ')"
echo "HAProxy: $(echo "show servers state app" | python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read())
out = b""
while chunk := s.recv(65536): out += chunk
for line in out.decode().splitlines()[2:]:
    f = line.split()
    if len(f) > 7: print(f"{f[3]} weight={f[7]}", end="  ")
' "$TMP/haproxy.sock")"
echo "green's ASG in moto: $(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$SERVICE-green" \
  --query 'AutoScalingGroups[0].[DesiredCapacity,length(Instances)]' --output text | tr '\t' '/') desired/instances; alarms: $(aws cloudwatch describe-alarms --alarm-name-prefix "$SERVICE-green" --query 'MetricAlarms[].AlarmName' --output text | tr '\t' ' ')"

kill "$LOAD_PID" 2>/dev/null || true
wait "$LOAD_PID" 2>/dev/null || true
COUNTS_FINAL=$(counts)

section "summary"
printf '%-44s %5s %9s\n' step exit time
for i in "${!STEPS[@]}"; do
  mark=""
  [[ ${CODES[$i]} -eq ${EXPECTED[$i]} ]] || mark="  <-- expected ${EXPECTED[$i]}"
  printf '%-44s %5s %7sms%s\n' "${STEPS[$i]}" "${CODES[$i]}" "${TIMES[$i]}" "$mark"
done
FAILED_REQUESTS=$(python3 - "$COUNTS_START" "$COUNTS_MID" "$COUNTS_END" "$COUNTS_FINAL" <<'PY'
import json, sys
start, mid, end, final = (json.loads(a) for a in sys.argv[1:])
def diff(a, b):
    v = {k: n - a.get("versions", {}).get(k, 0) for k, n in b.get("versions", {}).items()}
    return {k: n for k, n in v.items() if n}, b.get("failed", 0) - a.get("failed", 0)
for name, a, b in (("release 2", start, mid), ("release 3", mid, end)):
    served, failed = diff(a, b)
    shown = ", ".join(f"v{k}: {n}" for k, n in sorted(served.items()))
    print(f"{name}: requests served by version {shown}; failed {failed}", file=sys.stderr)
total = final.get("failed", 0)
print(f"whole run: {sum(final.get('versions', {}).values())} requests, {total} failed "
      f"{final.get('errors', {}) or ''}", file=sys.stderr)
print(total)
PY
)

section "release history (switchyard history)"
"$BIN/switchyard" history || true
mkdir -p "$ROOT/.demo"
cp "$STATE" "$ROOT/.demo/switchyard-state.json"
echo "final state file: .demo/switchyard-state.json ($(wc -c <"$STATE") bytes, $("$BIN/switchyard" state validate "$STATE" | tail -1))"

if [[ $FAILED -ne 0 || $FAILED_REQUESTS != 0 ]]; then
  echo "demo: FAILED (a step did not end as expected, or requests failed)" >&2
  exit 1
fi
echo "demo: OK: release 2 promoted with 0 failed requests; release 3 rolled back by itself"
