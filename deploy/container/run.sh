#!/usr/bin/env bash
# fedistill's deployment kit run for real under Podman: the image built without a registry
# (deploy/container/build.sh), the compose file's four containers to a completed federation with one
# participant container SIGKILLed mid-round and brought back by its restart policy, and the Kubernetes
# manifests under `podman kube play`. Asserted from outside the containers: the coordinator's /status, the
# audit bundle exported from the coordinator's volume and verified, the verified log's rounds, the
# participants' work directories, the coordinator's log, and each container's process as the host sees it
# (non-root, read-only root, no capabilities, no_new_privs). Run as root. Documented in docs/operations.md
# ("Container tests").
#
# Usage: deploy/container/run.sh [--bin PATH] [--keep] [--list] [SCENARIO...]
#   SCENARIO: compose kube (default: both, in that order; the image is built first either way)
#   --bin PATH  the fedistill binary to package (default: $FEDISTILL_BIN or target/debug/fedistill)
#   --keep      keep the working directory (printed at the end) instead of deleting it
# Exit status: 0 when every scenario passed, 1 when one failed, 2 on bad usage or a missing prerequisite,
# 77 when this machine cannot run containers (a permission error from the container runtime).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/deploy/container"
BIN="${FEDISTILL_BIN:-$ROOT/target/debug/fedistill}"
KEEP=0
ALL_SCENARIOS=(compose kube)
SCENARIOS=()
IMAGE="fedistill:0.1.0"          # what compose.yaml and deploy/k8s name
BASE_IMAGE="localhost/debian:bookworm-slim"
PROJECT="fdci"                   # compose project name (containers fdci-SERVICE-1, network fdci_federation)
KUBE_NET="fdci_kube"             # the Podman network the kube pods join
WAIT_S=240                       # upper bound of any single wait (debug binary, 2 shared cores)
PY=/usr/bin/python3              # Debian's python3 with python3-yaml (not a pyenv shim without PyYAML)
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ left in deploy/container by the translators and their tests
CONF=/etc/containers/containers.conf
CONF_MARK="# written by fedistill deploy/container/run.sh"

usage() { sed -n '11,16p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --list) printf '%s\n' "${ALL_SCENARIOS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown flag $1" >&2; usage >&2; exit 2 ;;
    *) SCENARIOS+=("$1"); shift ;;
  esac
done
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=("${ALL_SCENARIOS[@]}")
for s in "${SCENARIOS[@]}"; do
  case " ${ALL_SCENARIOS[*]} " in *" $s "*) ;; *) echo "unknown scenario $s (known: ${ALL_SCENARIOS[*]})" >&2; exit 2 ;; esac
done

[ "$(id -u)" -eq 0 ] || { echo "run.sh: must run as root (debootstrap, podman networks, /etc/containers)" >&2; exit 2; }
for tool in podman runc catatonit debootstrap curl jq base64 od; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "run.sh: '$tool' is required (apt-get install podman runc catatonit debootstrap golang-github-containernetworking-plugin-dnsname python3-yaml curl jq)" >&2; exit 2; }
done
"$PY" -c 'import yaml' 2>/dev/null || { echo "run.sh: $PY needs PyYAML (apt-get install python3-yaml)" >&2; exit 2; }
[ -x /usr/lib/cni/dnsname ] || { echo "run.sh: the CNI dnsname plugin is required, so services find each other by name (apt-get install golang-github-containernetworking-plugin-dnsname)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "run.sh: no fedistill binary at $BIN (cargo build -p fedistill, or --bin PATH)" >&2; exit 2; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

WORK="$(mktemp -d /tmp/fedistill-containers.XXXXXX)"
log() { printf '[%6.1fs] %s\n' "$(( $(date +%s%N) / 1000000 - T0 ))e-3" "$*"; }
T0=$(( $(date +%s%N) / 1000000 ))

# ---- Podman settings ------------------------------------------------------------------------------------

# What Podman needs on these machines (each found by trying): runc (crun refuses cgroups v1 + v2 "hybrid"),
# the cgroupfs manager (no systemd), and default ulimits within the hard limits here (Podman's defaults
# fail with "setrlimit: Operation not permitted"). A containers.conf someone else wrote is set aside and put
# back on exit.
CONF_BACKUP=""
configure_podman() {
  if [ -f "$CONF" ] && ! grep -qF "$CONF_MARK" "$CONF"; then
    CONF_BACKUP="$CONF.fedistill-backup"
    cp -p "$CONF" "$CONF_BACKUP"
    log "set $CONF aside ($CONF_BACKUP; restored on exit)"
  fi
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<EOF
$CONF_MARK (docs/operations.md, "Container tests")
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
}

# ---- cleanup --------------------------------------------------------------------------------------------

NAMED_VOLUMES=()   # Podman volumes a kube play created (claims, ConfigMaps)

remove_compose() {
  local ids
  ids=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  [ -n "$ids" ] && podman rm -f -v $ids >/dev/null 2>&1
  podman network rm -f "${PROJECT}_federation" >/dev/null 2>&1
  return 0
}

remove_kube() {
  local f
  for f in "$WORK"/kube/play-*.yaml; do [ -f "$f" ] && podman kube down "$f" >/dev/null 2>&1; done
  [ ${#NAMED_VOLUMES[@]} -gt 0 ] && podman volume rm -f "${NAMED_VOLUMES[@]}" >/dev/null 2>&1
  podman network rm -f "$KUBE_NET" >/dev/null 2>&1
  return 0
}

cleanup() {
  local rc=$?
  remove_compose
  remove_kube
  if [ -n "$CONF_BACKUP" ]; then mv -f "$CONF_BACKUP" "$CONF"; fi
  if [ "$KEEP" -eq 1 ]; then
    echo "working directory kept: $WORK (the image $IMAGE and the base $BASE_IMAGE stay too)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- shared checks --------------------------------------------------------------------------------------

DIR=""   # the current scenario's directory

fail() {
  echo "FAIL [$SCENARIO]: $*"
  echo "  last /status: $(cat "$DIR/status.json" 2>/dev/null)"
  local c
  for c in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep -E "^($PROJECT-|fedistill-)" | grep -v -- '-infra$'); do
    echo "  --- $(podman inspect -f '{{.Name}} {{.State.Status}} exit {{.State.ExitCode}} restarts {{.RestartCount}}' "$c" 2>/dev/null)"
    podman logs --tail 10 "$c" 2>&1 | cut -c1-400 | sed 's/^/    /'
  done
  return 1
}

# The /status JSON from URL with the operator's console token (the status port is bound beyond loopback in
# the containers, so every path but /healthz needs it).
get_status() { curl -fsS --max-time 2 -H "Authorization: Bearer $TOKEN" "$STATUS_URL/status" 2>/dev/null; }

poll_status() {
  local s
  s=$(get_status) || return 1
  printf '%s\n' "$s" >"$DIR/status.json"
}

# wait_status DESCRIPTION JQ_FILTER: polls /status until the filter holds, for at most WAIT_S seconds.
wait_status() {
  local what="$1" filter="$2" deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    if poll_status && jq -e "($filter)" "$DIR/status.json" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "timed out after ${WAIT_S}s waiting for $what"
}

# hardened NAME: the container's main process, as the host sees it, runs as uid/gid 10001 (real, effective,
# saved, filesystem), with no capabilities and no_new_privs set, on a read-only root file system with /tmp a
# separate mount; and `podman inspect` agrees (ReadonlyRootfs, User).
hardened() {
  local c="$1" pid ro user
  read -r pid ro user < <(podman inspect -f '{{.State.Pid}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}}' "$c") ||
    { fail "podman inspect $c failed"; return 1; }
  [ "$ro" = true ] || { fail "$c: podman inspect says ReadonlyRootfs=$ro"; return 1; }
  [ "${user%%:*}" = 10001 ] || { fail "$c: podman inspect says User=$user"; return 1; }
  [ "$pid" -gt 0 ] 2>/dev/null || { fail "$c: not running (pid $pid)"; return 1; }
  local status; status=$(cat "/proc/$pid/status" 2>/dev/null) || { fail "$c: /proc/$pid/status unreadable"; return 1; }
  local uids gids caps nnp
  uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' <<<"$status")
  gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' <<<"$status")
  caps=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
  nnp=$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")
  [ "$uids" = "10001 10001 10001 10001" ] || { fail "$c: process $pid runs with uids $uids"; return 1; }
  [ "$gids" = "10001 10001 10001 10001" ] || { fail "$c: process $pid runs with gids $gids"; return 1; }
  [ "$caps" = 0000000000000000 ] || { fail "$c: process $pid has effective capabilities $caps"; return 1; }
  [ "$nnp" = 1 ] || { fail "$c: process $pid has no_new_privs $nnp"; return 1; }
  # mountinfo: field 5 is the mount point, field 6 its options; the file system type follows " - ".
  local root_opts tmp_mount threads
  root_opts=$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | tail -n1)
  tmp_mount=$(awk '$5 == "/tmp" { split($0, a, " - "); split(a[2], t, " "); print t[1], $6 }' "/proc/$pid/mountinfo" | tail -n1)
  case ",$root_opts," in *,ro,*) ;; *) fail "$c: root file system mounted '$root_opts', not read-only"; return 1 ;; esac
  [ -n "$tmp_mount" ] || { fail "$c: /tmp is not a mount of its own (writes would need the root)"; return 1; }
  threads=$(ls "/proc/$pid/task" | wc -l)
  echo "$c: pid $pid uid/gid 10001, CapEff 0, NoNewPrivs 1, root $root_opts, /tmp $tmp_mount, $threads threads" >>"$DIR/hardening.txt"
}

hex_of_pub() { base64 -d <(grep -v -- ----- "$1") | tail -c 32 | od -An -tx1 | tr -d ' \n'; }

# audit FEDDIR FEDERATION VOLUME: exports the log with payloads from the coordinator's volume (a bind
# directory or a Podman volume) with the image's own fedistill and verifies it there against a trust file
# built from the federation's public keys (coordinator log key, the three witnesses, quorum 2). Leaves the
# verified bundle's timeline in $DIR/timeline.txt. The volume is mounted writable although the export only
# reads: the store is a SQLite WAL database, and after the coordinator's clean exit (which removes the -wal
# and -shm files) SQLite cannot open it from a read-only directory ("unable to open database file").
audit() {
  local fed="$1" federation="$2" volume="$3" out="$DIR/audit"
  mkdir -p "$out" && chown 10001:10001 "$out"
  {
    echo "origin = \"fedistill/$federation\""
    echo "coordinator_key = \"$(hex_of_pub "$fed/coordinator/signing.pub.pem")\""
    echo 'quorum = 2'
    local n
    for n in p0 p1 p2; do
      printf '\n[[witness]]\nname = "fedistill-witness/%s"\nkey = "%s"\n' "$n" "$(hex_of_pub "$fed/kits/$n/signing.pub.pem")"
    done
  } >"$out/trust.toml"
  local run=(podman run --rm --read-only --network=none --cap-drop ALL -v "$volume:/work" -v "$out:/audit" "$IMAGE")
  "${run[@]}" audit export --store /work/coordinator.sqlite --out /audit/bundle --payloads >"$DIR/audit.log" 2>&1 ||
    { fail "audit export from the coordinator's volume failed: $(tail -n 5 "$DIR/audit.log")"; return 1; }
  "${run[@]}" audit verify /audit/bundle --trust /audit/trust.toml --require-payloads >>"$DIR/audit.log" 2>&1 ||
    { fail "fedistill audit verify failed: $(tail -n 20 "$DIR/audit.log")"; return 1; }
  log "audit verify (in the image, bundle exported from the coordinator's volume): $(grep -m1 '^OK' "$DIR/audit.log")"
  "${run[@]}" audit show /audit/bundle >"$DIR/timeline.txt" 2>&1 || { fail "audit show failed"; return 1; }
}

# aggregated: the rounds the verified log aggregated, in log order, one line each: "ROUND CONTRIBUTORS".
aggregated() { sed -n 's/.*round \([0-9]*\): aggregate [0-9a-f]* by [a-z-]* over \[\(.*\)\]$/\1 \2/p' "$DIR/timeline.txt"; }

# every_round R: the verified log aggregated rounds 1..R, each exactly once.
every_round() {
  local got; got=$(aggregated | awk '{ print $1 }' | tr '\n' ' ')
  [ "$got" = "$(seq -s ' ' 1 "$1") " ] || { fail "the log did not aggregate every round 1..$1 exactly once (log: $got)"; return 1; }
}

# results DIR...: each participant wrote result.json naming itself (work directory /work/node).
results() {
  local n=0 d
  for d in "$@"; do
    jq -e --arg p "p$n" '.participant == $p and (.student_accuracy | type == "number")' "$d/node/result.json" >/dev/null 2>&1 ||
      { fail "p$n: no result.json in its work directory $d/node"; return 1; }
    n=$((n + 1))
  done
}

# fill_claim CLAIM FILE...: the claim's Podman volume made afresh and filled with FILEs, group 10001 (the
# pods' fsGroup) able to read them: what a cluster's claim bound to storage that already holds an
# institution's files looks like to its pod (kube_podman.py --filled-claim leaves the claim's document out).
fill_claim() {
  local claim="$1" mp; shift
  podman volume rm -f "$claim" >/dev/null 2>&1
  podman volume create "$claim" >/dev/null || { fail "podman volume create $claim failed"; return 1; }
  mp=$(podman volume inspect -f '{{.Mountpoint}}' "$claim") || { fail "podman volume inspect $claim failed"; return 1; }
  cp "$@" "$mp/" && chgrp -R 10001 "$mp" && chmod -R g+rX "$mp" || { fail "filling the volume of $claim failed"; return 1; }
}

# ---- scenarios ------------------------------------------------------------------------------------------

# The compose file's four containers, started with the `podman run` arguments compose_podman.py derives
# from deploy/compose/compose.yaml (the file itself, copied unchanged into a project directory prepared as
# its header says: kits, and each node's own files from `fedistill data split`, the coordinator mounting the
# task card and the public set, each participant only its data/nodes/pN at /data). CI's coordinator.toml differs from config/coordinator.toml in three values only: more
# rounds (so a kill lands mid-federation and leaves rounds to rejoin) and 10 s deadlines instead of 60 s and
# 120 s (a killed participant's round waits for a deadline). p2's container is SIGKILLed from the host once
# round 2 opened; `restart: on-failure` must bring it back; it must rejoin: reconnect (coordinator log) and
# contribute to and report a later round (verified log, its state.json).
scenario_compose() {
  local R=12 proj="$DIR/compose" C="$HERE/compose_podman.py" s p kv
  mkdir -p "$proj"
  cp "$ROOT/deploy/compose/compose.yaml" "$proj/" && cp -r "$ROOT/deploy/compose/config" "$proj/" || return 1
  local key val
  for kv in "rounds=$R" collect_timeout_ms=10000 report_timeout_ms=10000; do
    key=${kv%%=*}; val=${kv#*=}
    [ "$(grep -c "^$key = " "$proj/config/coordinator.toml")" = 1 ] ||
      { fail "config/coordinator.toml has no single '$key = ' line to set for CI"; return 1; }
    sed -i "s/^$key = .*/$key = $val/" "$proj/config/coordinator.toml"
  done
  # The compose header's preparation, verbatim (without sudo: this runs as root).
  (
    cd "$proj" || exit 1
    "$BIN" provision init --federation compose --coordinator-host coordinator:4433 --out fed >"$DIR/provision.log" 2>&1 || exit 1
    for p in p0 p1 p2; do "$BIN" provision add-participant $p --out fed >>"$DIR/provision.log" 2>&1 || exit 1; done
    "$BIN" data split --dataset mnist-10k --participants 3 --seed 42 --out data >>"$DIR/provision.log" 2>&1 || exit 1
    mkdir -p work/coordinator work/p0 work/p1 work/p2 && chown -R 10001:10001 work
    chgrp -R 10001 fed data && chmod -R g+rX fed data
  ) || { fail "preparing the compose directory failed: $(tail -n 5 "$DIR/provision.log")"; return 1; }
  log "own files: $(sed -n 's/^coordinator  //p' "$DIR/provision.log") for the coordinator; data/nodes/pN for participant pN"

  remove_compose
  local net services s args
  net=$("$PY" "$C" "$proj/compose.yaml" --project "$PROJECT" networks) || { fail "compose_podman.py networks failed"; return 1; }
  for s in $net; do podman network create "$s" >/dev/null || { fail "podman network create $s failed"; return 1; }; done
  services=$("$PY" "$C" "$proj/compose.yaml" --project "$PROJECT" services) || { fail "compose_podman.py services failed"; return 1; }
  [ "$(echo $services)" = "coordinator p0 p1 p2" ] || { fail "compose services: $services"; return 1; }
  for s in $services; do
    "$PY" "$C" "$proj/compose.yaml" --project "$PROJECT" show "$s" >>"$DIR/podman-run.txt" || return 1
    mapfile -d '' args < <("$PY" "$C" "$proj/compose.yaml" --project "$PROJECT" run "$s")
    [ ${#args[@]} -gt 0 ] || { fail "compose_podman.py run $s produced nothing"; return 1; }
    # Podman logs the health check's missing systemd timer (no systemd here); the script runs the check itself.
    podman run "${args[@]}" >/dev/null 2>>"$DIR/podman-run.err" || { fail "podman run $s failed: $(tail -n 3 "$DIR/podman-run.err")"; return 1; }
    log "started $PROJECT-$s-1"
  done
  TOKEN=$(cat "$proj/fed/operator/console.token")
  STATUS_URL="http://127.0.0.1:9100"   # the coordinator's published status port (host loopback only)
  wait_status "the coordinator's status port (published on 127.0.0.1:9100)" 'true' || return 1
  for s in $services; do hardened "$PROJECT-$s-1" || return 1; done
  log "all four containers: non-root, read-only root, no capabilities, no_new_privs (from /proc, and podman inspect)"
  local health; health=$(podman healthcheck run "$PROJECT-coordinator-1" 2>&1) ||
    { fail "the compose health check of the coordinator failed: $health"; return 1; }
  log "compose health check of the coordinator: ${health:-healthy}"

  wait_status "round 2 open" '.round >= 2' || return 1
  local pid k0 k phase
  k0=$(jq '.round' "$DIR/status.json")
  pid=$(podman inspect -f '{{.State.Pid}}' "$PROJECT-p2-1")
  kill -9 "$pid" || { fail "could not SIGKILL p2's process $pid"; return 1; }
  poll_status
  k=$(jq '.round' "$DIR/status.json"); phase=$(jq -r '.phase' "$DIR/status.json")
  log "SIGKILLed p2's container process (host pid $pid) during round $k (phase $phase)"
  local deadline=$((SECONDS + WAIT_S)) restarts="" state="" newpid=""
  while [ $SECONDS -lt $deadline ]; do
    read -r restarts state newpid < <(podman inspect -f '{{.RestartCount}} {{.State.Status}} {{.State.Pid}}' "$PROJECT-p2-1")
    [ "$restarts" -ge 1 ] && [ "$state" = running ] && [ "$newpid" != "$pid" ] && break
    sleep 0.2
  done
  [ "$restarts" -ge 1 ] && [ "$state" = running ] || { fail "p2 was not restarted (restarts $restarts, state $state)"; return 1; }
  log "p2's container restarted by its restart policy (restart count $restarts, new pid $newpid)"
  hardened "$PROJECT-p2-1" || return 1
  wait_status "the federation to finish" '.finished == true and .rounds == '"$R" || return 1
  log "/status: finished, $R rounds"

  # Every container exits by itself with status 0; only p2 was restarted, once.
  local c code
  deadline=$((SECONDS + WAIT_S))
  for s in $services; do
    c="$PROJECT-$s-1"
    while [ "$(podman inspect -f '{{.State.Status}}' "$c")" != exited ]; do
      [ $SECONDS -lt $deadline ] || { fail "$c did not exit after the federation finished"; return 1; }
      sleep 0.2
    done
    read -r code restarts < <(podman inspect -f '{{.State.ExitCode}} {{.RestartCount}}' "$c")
    [ "$code" = 0 ] || { fail "$c exited with status $code"; return 1; }
    [ "$restarts" = "$([ "$s" = p2 ] && echo 1 || echo 0)" ] || { fail "$c was restarted $restarts times"; return 1; }
  done
  log "every container exited 0 (p2 restarted once, the others never)"

  audit "$proj/fed" compose "$proj/work/coordinator" || return 1
  every_round $R || return 1
  aggregated | sed 's/^/    round /' >"$DIR/rounds.txt"
  # Before the kill every round had all three; after it, p2 contributed to and reported some round > k.
  aggregated | awk -v k="$k0" '$1 < k && $0 !~ /p0, p1, p2/ { bad = 1 } END { exit bad }' ||
    { fail "a round before the kill lacks a contributor: $(cat "$DIR/rounds.txt")"; return 1; }
  local rejoined
  rejoined=$(aggregated | awk -v k="$k" '$1 > k && /p2/ { print $1; exit }')
  [ -n "$rejoined" ] || { fail "p2 contributed to no round after round $k: $(cat "$DIR/rounds.txt")"; return 1; }
  grep -qE "round $rejoined: report from p2:" "$DIR/timeline.txt" ||
    { fail "p2 sent no round report for round $rejoined"; return 1; }
  jq -e --argjson k "$k" '[.rounds[].round | select(. > $k)] | length >= 1' "$proj/work/p2/node/state.json" >/dev/null ||
    { fail "p2's state.json records no distilled round after $k"; return 1; }
  local connects
  connects=$(podman logs "$PROJECT-coordinator-1" 2>&1 | jq -r 'select(.fields.message == "participant connected" and .fields.participant == "p2" and .fields.remote != null) | .timestamp' 2>/dev/null | wc -l)
  [ "$connects" -ge 2 ] || { fail "the coordinator log shows p2 connecting $connects time(s), not again after the kill"; return 1; }
  log "p2 rejoined: connected again (coordinator log: $connects connections), contributed to round $rejoined and reported it"
  results "$proj/work/p0" "$proj/work/p1" "$proj/work/p2" || return 1
  NOTE="PASS ($R rounds; p2 killed in round $k ($phase), back in round $rejoined; log verifies)"
}

# The Kubernetes manifests under `podman kube play`, with the image built above: coordinator.yaml, then
# participants.yaml, as kube_podman.py passes them to Podman 4.3 (Secrets laid out as the kubelet would,
# emptyDir per pod; Namespace, Services and NetworkPolicies left out). The federation is provisioned as the
# manifests' headers say (kits dial fedistill-coordinator.fedistill.svc:4433, which each participant pod
# resolves to the coordinator pod through hostAliases, standing in for the cluster's Service DNS); the
# Secrets hold exactly the files the headers' `kubectl create secret` commands name; the data claims
# (fedistill-coordinator-data: the task card and the public set; fedistill-pN-data: participant pN's own files
# from `fedistill data split`) are Podman volumes filled before the play. The coordinator's config is the
# ConfigMap's, unchanged (20 rounds). Asserted: every container hardened; /status finished;
# the bundle exported from the store's claim verifies with every round aggregated from all three; every
# participant's result.json in its claim.
scenario_kube() {
  local k8s="$ROOT/deploy/k8s" kd="$DIR" K="$HERE/kube_podman.py" s p
  mkdir -p "$kd/secrets" "$kd/volumes"
  (
    cd "$kd" || exit 1
    "$BIN" provision init --federation kube --coordinator-host fedistill-coordinator.fedistill.svc:4433 --out fed >"$DIR/provision.log" 2>&1 || exit 1
    for p in p0 p1 p2; do "$BIN" provision add-participant $p --out fed >>"$DIR/provision.log" 2>&1 || exit 1; done
    "$BIN" data split --dataset mnist-10k --participants 3 --seed 42 --out data >>"$DIR/provision.log" 2>&1 || exit 1
  ) || { fail "provisioning failed: $(tail -n 5 "$DIR/provision.log")"; return 1; }
  # The Secrets as coordinator.yaml's header creates them (--from-file=KEY=$F/PATH) and participants.yaml's
  # (--from-file=fed/kits/NAME/).
  local kv key path n=0
  mkdir -p "$kd/secrets/fedistill-federation"
  for kv in $(grep -o -- '--from-file=[a-z.]*=\$F/[a-z./]*' "$k8s/coordinator.yaml" | sed 's/^--from-file=//'); do
    key=${kv%%=*}; path=${kv#*=\$F/}
    cp "$kd/fed/$path" "$kd/secrets/fedistill-federation/$key" || { fail "the coordinator Secret's $key: no fed/$path"; return 1; }
    n=$((n + 1))
  done
  [ "$n" -ge 8 ] || { fail "found only $n --from-file entries in coordinator.yaml's header"; return 1; }
  for p in p0 p1 p2; do
    mkdir -p "$kd/secrets/fedistill-kit-$p" && cp "$kd/fed/kits/$p/"* "$kd/secrets/fedistill-kit-$p/"
  done
  local secrets=()
  for s in "$kd"/secrets/*; do secrets+=(--secret "$(basename "$s")=$s"); done

  remove_kube
  podman network create "$KUBE_NET" >/dev/null || { fail "podman network create $KUBE_NET failed"; return 1; }
  "$PY" "$K" "${secrets[@]}" --volumes-out "$kd/volumes" --named-volumes "$kd/named-c" \
    --filled-claim fedistill-coordinator-data \
    "$k8s/coordinator.yaml" >"$kd/play-coordinator.yaml" 2>"$kd/translate.log" ||
    { fail "kube_podman.py failed: $(cat "$kd/translate.log")"; return 1; }
  mapfile -t NAMED_VOLUMES <"$kd/named-c"
  podman volume rm -f "${NAMED_VOLUMES[@]}" >/dev/null 2>&1
  fill_claim fedistill-coordinator-data "$kd/data/task.toml" "$kd/data/public-images.idx3-ubyte" || return 1
  podman kube play --network "$KUBE_NET" "$kd/play-coordinator.yaml" >"$kd/play.log" 2>&1 ||
    { fail "podman kube play coordinator.yaml failed: $(tail -n 5 "$kd/play.log")"; return 1; }
  local coord ip
  coord=$(podman ps -a --format '{{.Names}}' | grep '^fedistill-coordinator-pod.*-coordinator$' | head -n1)
  [ -n "$coord" ] || { fail "no coordinator container after kube play"; return 1; }
  ip=$(podman inspect -f "{{(index .NetworkSettings.Networks \"$KUBE_NET\").IPAddress}}" "$coord" 2>/dev/null)
  [ -n "$ip" ] || { fail "no address on $KUBE_NET for the coordinator pod"; return 1; }
  log "coordinator pod up ($coord at $ip)"
  "$PY" "$K" "${secrets[@]}" --volumes-out "$kd/volumes" --named-volumes "$kd/named-p" \
    --filled-claim fedistill-p0-data --filled-claim fedistill-p1-data --filled-claim fedistill-p2-data \
    --host-alias "fedistill-coordinator.fedistill.svc=$ip" "$k8s/participants.yaml" >"$kd/play-participants.yaml" 2>>"$kd/translate.log" ||
    { fail "kube_podman.py failed: $(cat "$kd/translate.log")"; return 1; }
  mapfile -t -O ${#NAMED_VOLUMES[@]} NAMED_VOLUMES <"$kd/named-p"
  for p in p0 p1 p2; do
    fill_claim "fedistill-$p-data" "$kd/data/nodes/$p/"* || return 1
  done
  log "data claims filled: fedistill-coordinator-data (task card, public set), fedistill-pN-data (data/nodes/pN)"
  podman kube play --network "$KUBE_NET" "$kd/play-participants.yaml" >>"$kd/play.log" 2>&1 ||
    { fail "podman kube play participants.yaml failed: $(tail -n 5 "$kd/play.log")"; return 1; }
  sed 's/^kube_podman.py: /    /' "$kd/translate.log"
  local containers=("$coord") c
  for p in p0 p1 p2; do
    c=$(podman ps -a --format '{{.Names}}' | grep "^fedistill-$p-pod.*-participant$" | head -n1)
    [ -n "$c" ] || { fail "no container for $p after kube play"; return 1; }
    containers+=("$c")
  done
  log "participant pods up: ${containers[*]:1}"
  TOKEN=$(cat "$kd/fed/operator/console.token")
  STATUS_URL="http://$ip:9100"
  wait_status "the coordinator's status port" 'true' || return 1
  for c in "${containers[@]}"; do hardened "$c" || return 1; done
  log "all four containers: non-root, read-only root, no capabilities, no_new_privs"
  local R
  R=$(jq '.rounds' "$DIR/status.json")
  wait_status "the federation to finish" '.finished == true' || return 1
  log "/status: finished, $R rounds"
  # A Deployment restarts whatever exits, so finished participants start again, learn that the
  # federation finished and exit, over and over: take the pods down now (docs/operations.md, "Kubernetes").
  podman kube down "$kd/play-participants.yaml" >/dev/null 2>&1
  podman kube down "$kd/play-coordinator.yaml" >/dev/null 2>&1
  audit "$kd/fed" kube fedistill-coordinator-store || return 1
  every_round "$R" || return 1
  aggregated | awk '$0 !~ /p0, p1, p2/ { bad = 1 } END { exit bad }' ||
    { fail "a round was aggregated without all three participants: $(aggregated | tr '\n' ';')"; return 1; }
  local works=()
  for p in p0 p1 p2; do works+=("$(podman volume inspect -f '{{.Mountpoint}}' "fedistill-$p-work")"); done
  results "${works[@]}" || return 1
  NOTE="PASS ($R rounds, each aggregated from p0, p1, p2; log verifies)"
}

# ---- main -----------------------------------------------------------------------------------------------

log "binary $BIN; working directory $WORK"
# The translators' own tests first (milliseconds, no engine): a broken translator fails here, not as a
# vague container failure.
"$PY" -m unittest "$HERE/test_translators.py" >"$WORK/translator-tests.log" 2>&1 ||
  { cat "$WORK/translator-tests.log"; echo "FAIL: deploy/container/test_translators.py"; exit 1; }
log "translator tests: $(tail -n 3 "$WORK/translator-tests.log" | grep -m1 '^Ran')"
configure_podman

# Can this machine run a container at all? A root file system of /bin/true and its libraries, no image:
# a permission error here (no namespaces or mounts for this user, as in an unprivileged container) is a skip.
probe="$WORK/probe-rootfs"
for f in /bin/true $(ldd /bin/true | grep -o '/[^ ]*'); do install -D "$(readlink -f "$f")" "$probe$f"; done
if ! podman run --rm --network=none --rootfs "$probe" /bin/true >"$WORK/probe.log" 2>&1; then
  if grep -qiE 'operation not permitted|permission denied' "$WORK/probe.log"; then
    echo "SKIP: containers cannot run on this machine: 'podman run' failed: $(tail -n 1 "$WORK/probe.log")"
    exit 77
  fi
  echo "run.sh: 'podman run' of a minimal root file system failed (not a permission error): $(cat "$WORK/probe.log")" >&2
  exit 1
fi
rm -rf "$probe"

SCENARIO=image
DIR="$WORK/image"; mkdir -p "$DIR"
log "=== image (deploy/container/build.sh)"
if ! bash "$HERE/build.sh" --tag "$IMAGE" --base "$BASE_IMAGE" --bin "$BIN" >"$DIR/build.log" 2>&1; then
  cat "$DIR/build.log"
  echo "FAIL: building the image failed"
  exit 1
fi
sed 's/^/  /' "$DIR/build.log" | grep -v 'SYS_UID_MAX'
IMAGE_SIZE=$(podman image inspect -f '{{.Size}}' "$IMAGE")

declare -A RESULT
failed=0
for s in "${SCENARIOS[@]}"; do
  SCENARIO="$s"; DIR="$WORK/$s"; rm -rf "$DIR"; mkdir -p "$DIR"
  start_s=$SECONDS
  NOTE=""
  log "=== $s"
  if "scenario_$s"; then RESULT[$s]="${NOTE:-PASS}"; else RESULT[$s]="FAIL"; failed=1; fi
  RESULT[$s]="${RESULT[$s]} [$((SECONDS - start_s))s]"
  [ -f "$DIR/hardening.txt" ] && sed 's/^/    /' "$DIR/hardening.txt"
  [ -f "$DIR/rounds.txt" ] && cat "$DIR/rounds.txt"
  case $s in compose) remove_compose ;; kube) remove_kube ;; esac
done
echo
echo "container tests (image $IMAGE: $IMAGE_SIZE bytes):"
npass=0; nfail=0
for s in "${SCENARIOS[@]}"; do
  echo "  $s: ${RESULT[$s]}"
  case "${RESULT[$s]}" in FAIL*) nfail=$((nfail + 1)) ;; *) npass=$((npass + 1)) ;; esac
done
echo "containers: $npass passed, $nfail failed"
exit "$failed"
