#!/usr/bin/env bash
# A throw-away Kubernetes control plane (etcd + kube-apiserver, no scheduler,
# no kubelet, no controller-manager) on loopback, for end-to-end tests.
#
#   cluster.sh start DIR              start etcd + kube-apiserver, state in DIR
#   cluster.sh stop DIR               stop both (by the pids recorded in DIR/pids)
#   cluster.sh env DIR                print the shell exports (eval "$(cluster.sh env DIR)")
#   cluster.sh restart-apiserver DIR  restart only kube-apiserver, same port, same etcd
#   cluster.sh status DIR             show what is running
#
# DIR is created if missing. Run tests/e2e/setup.sh once first.
# Files written in DIR:
#   env            shell exports: KUBECONFIG E2E_APISERVER_URL E2E_ADMIN_TOKEN
#                  E2E_WEBHOOK_TOKEN E2E_DIR E2E_CA_FILE E2E_ETCD_URL
#                  E2E_WEBHOOK_CLIENT_CA E2E_WEBHOOK_CLIENT_CERT E2E_WEBHOOK_CLIENT_KEY
#   kubeconfig     admin kubeconfig (token auth, CA pinned)
#   admission.yaml AdmissionConfiguration: the webhook plugins use webhook-client.kubeconfig
#   webhook-client.kubeconfig  the client certificate the apiserver presents to every webhook
#   pids           "etcd PID" and "kube-apiserver PID" lines
#   state          ports and paths (sourced by this script)
#   pki/           ca.crt ca.key apiserver.crt apiserver.key sa.key sa.pub
#                  webhook-client-ca.crt webhook-client-ca.key webhook-client.crt webhook-client.key
#   tokens.csv     static token file (admin in system:masters; webhook SA user)
#   logs/          etcd.log kube-apiserver.log
#   etcd-data/     etcd data dir
# Environment knobs: E2E_CACHE (default /var/cache/spark-admission-e2e),
# KUBE_APISERVER (binary, default $E2E_CACHE/bin/kube-apiserver), ETCD (binary),
# E2E_READY_TIMEOUT (seconds, default 60), E2E_APISERVER_EXTRA_ARGS (extra flags).
set -euo pipefail

E2E_CACHE=${E2E_CACHE:-/var/cache/spark-admission-e2e}
KUBE_APISERVER=${KUBE_APISERVER:-$E2E_CACHE/bin/kube-apiserver}
ETCD=${ETCD:-$(command -v etcd || echo /usr/bin/etcd)}
READY_TIMEOUT=${E2E_READY_TIMEOUT:-60}
WEBHOOK_SA_USER=system:serviceaccount:spark-admission:spark-admission

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

# Print N distinct free TCP ports on 127.0.0.1 (all held open until chosen).
free_ports() {
  local py; py=$(command -v python3 || true); [[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
  [[ -n $py ]] || die "python3 needed to pick free ports"
  "$py" - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rand_token() { openssl rand -hex 24; }

# pid_alive PID NAME : the pid exists and runs the binary NAME (so a recycled
# pid of some other program is never signalled).
pid_alive() {
  local pid=$1 name=$2 exe
  [[ -n $pid && -d /proc/$pid ]] || return 1
  exe=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | awk '{print $1}')
  [[ $(basename -- "$exe") == "$name" ]]
}

stop_pid() { # stop_pid PID NAME
  local pid=$1 name=$2 i
  pid_alive "$pid" "$name" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do pid_alive "$pid" "$name" || return 0; sleep 0.1; done
  log "$name ($pid) did not exit after TERM; sending KILL"
  kill -KILL "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do pid_alive "$pid" "$name" || return 0; sleep 0.1; done
  die "$name ($pid) still alive after KILL"
}

read_pid() { awk -v n="$2" '$1 == n {print $2}' "$1/pids" 2>/dev/null | tail -n1; }

set_pid() { # set_pid DIR NAME PID
  local f=$1/pids
  touch "$f"
  { grep -v "^$2 " "$f" || true; echo "$2 $3"; } > "$f.tmp"
  mv "$f.tmp" "$f"
}

load_state() {
  [[ -f $1/state ]] || die "$1/state not found: was '$0 start $1' run?"
  # shellcheck disable=SC1091
  source "$1/state"
}

gen_pki() {
  local pki=$1/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=spark-admission-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    -subj "/CN=kube-apiserver" 2>/dev/null
  cat > "$pki/apiserver.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # The client certificate the apiserver presents to webhooks (admission.yaml), from a CA of
  # its own: a webhook run with --client-ca trusts whatever that CA signed, so it signs
  # nothing else (the cluster CA above also vouches for every user's client certificate).
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$pki/webhook-client-ca.key" -out "$pki/webhook-client-ca.crt" \
    -subj "/CN=spark-admission-e2e-webhook-client-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$pki/webhook-client.key" -out "$pki/webhook-client.csr" \
    -subj "/CN=kube-apiserver-webhook-client" 2>/dev/null
  cat > "$pki/webhook-client.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
  openssl x509 -req -in "$pki/webhook-client.csr" -CA "$pki/webhook-client-ca.crt" \
    -CAkey "$pki/webhook-client-ca.key" -CAcreateserial -days 3650 -sha256 \
    -extfile "$pki/webhook-client.ext" -out "$pki/webhook-client.crt" 2>/dev/null
  chmod 600 "$pki"/*.key
}

start_etcd() {
  local d=$1 pid
  port_in_use "$ETCD_CLIENT_PORT" && die "etcd client port $ETCD_CLIENT_PORT already in use"
  ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} nohup "$ETCD" \
    --name e2e \
    --data-dir "$d/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --snapshot-count 10000 \
    >> "$d/logs/etcd.log" 2>&1 < /dev/null &
  pid=$!
  set_pid "$d" etcd "$pid"
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
    if ! pid_alive "$pid" etcd; then
      tail -n 40 "$d/logs/etcd.log" >&2; die "etcd exited (log: $d/logs/etcd.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$d/logs/etcd.log" >&2; die "etcd not healthy after ${READY_TIMEOUT}s"
    fi
    sleep 0.2
  done
  log "etcd up (pid $pid, http://127.0.0.1:$ETCD_CLIENT_PORT)"
}

start_apiserver() {
  local d=$1 pid i
  # After a restart the old listener may need a moment to go away.
  for i in $(seq 1 50); do port_in_use "$APISERVER_PORT" || break; sleep 0.2; done
  port_in_use "$APISERVER_PORT" && die "apiserver port $APISERVER_PORT already in use"
  [[ -x $KUBE_APISERVER ]] || die "$KUBE_APISERVER not found: run tests/e2e/setup.sh"
  # --enable-aggregator-routing: the apiserver reaches a webhook's Service through the Service's
  # Endpoints (an address and port written by hand, as the endpoints controller would) instead of
  # its cluster IP, which nothing routes here (no kube-proxy).
  # shellcheck disable=SC2086
  nohup "$KUBE_APISERVER" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --secure-port="$APISERVER_PORT" \
    --insecure-port=0 \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --cert-dir="$d/pki" \
    --tls-cert-file="$d/pki/apiserver.crt" \
    --tls-private-key-file="$d/pki/apiserver.key" \
    --client-ca-file="$d/pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$d/pki/sa.pub" \
    --service-account-signing-key-file="$d/pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --enable-aggregator-routing=true \
    --authorization-mode=RBAC \
    --token-auth-file="$d/tokens.csv" \
    --disable-admission-plugins=ServiceAccount \
    --admission-control-config-file="$d/admission.yaml" \
    --allow-privileged=true \
    --feature-gates=GenericEphemeralVolume=true \
    --profiling=false \
    --v=1 \
    ${E2E_APISERVER_EXTRA_ARGS:-} \
    >> "$d/logs/kube-apiserver.log" 2>&1 < /dev/null &
  pid=$!
  set_pid "$d" kube-apiserver "$pid"
  local deadline=$((SECONDS + READY_TIMEOUT)) out=""
  while :; do
    out=$(curl -sS --max-time 3 --cacert "$d/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
      "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null || true)
    [[ $out == ok ]] && break
    if ! pid_alive "$pid" kube-apiserver; then
      tail -n 40 "$d/logs/kube-apiserver.log" >&2; die "kube-apiserver exited (log: $d/logs/kube-apiserver.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "$d/logs/kube-apiserver.log" >&2
      [[ -n $out ]] && printf '%s\n' "$out" | grep -v '^\[+\]' >&2
      die "kube-apiserver not ready after ${READY_TIMEOUT}s"
    fi
    sleep 0.3
  done
  log "kube-apiserver ready (pid $pid, https://127.0.0.1:$APISERVER_PORT)"
}

write_files() {
  local d=$1 ca_b64
  ca_b64=$(base64 -w0 < "$d/pki/ca.crt")
  cat > "$d/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $ca_b64
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
- name: webhook-sa
  user:
    token: $WEBHOOK_TOKEN
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
- name: e2e-webhook-sa
  context:
    cluster: e2e
    user: webhook-sa
current-context: e2e
KC
  chmod 600 "$d/kubeconfig"
  # How the apiserver authenticates to admission webhooks. The user "*" matches every webhook
  # (the tests' webhooks are https://127.0.0.1:RANDOM-PORT); a webhook that asks for no client
  # certificate never sees it, so only webhooks run with --client-ca are affected.
  cat > "$d/webhook-client.kubeconfig" <<KC
apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: $d/pki/webhook-client.crt
    client-key: $d/pki/webhook-client.key
KC
  cat > "$d/admission.yaml" <<ADM
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: MutatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $d/webhook-client.kubeconfig
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: $d/webhook-client.kubeconfig
ADM
  cat > "$d/env" <<ENV
export E2E_DIR='$d'
export KUBECONFIG='$d/kubeconfig'
export E2E_APISERVER_URL='https://127.0.0.1:$APISERVER_PORT'
export E2E_ADMIN_TOKEN='$ADMIN_TOKEN'
export E2E_WEBHOOK_TOKEN='$WEBHOOK_TOKEN'
export E2E_WEBHOOK_USER='$WEBHOOK_SA_USER'
export E2E_CA_FILE='$d/pki/ca.crt'
export E2E_ETCD_URL='http://127.0.0.1:$ETCD_CLIENT_PORT'
export E2E_WEBHOOK_CLIENT_CA='$d/pki/webhook-client-ca.crt'
export E2E_WEBHOOK_CLIENT_CERT='$d/pki/webhook-client.crt'
export E2E_WEBHOOK_CLIENT_KEY='$d/pki/webhook-client.key'
ENV
}

cmd_start() {
  local d t0=$SECONDS
  d=$(abs_dir "$1")
  if [[ -f $d/pids ]]; then
    local p; p=$(read_pid "$d" etcd)
    if pid_alive "$p" etcd || pid_alive "$(read_pid "$d" kube-apiserver)" kube-apiserver; then
      die "a cluster is already running in $d (use '$0 stop $d' first)"
    fi
  fi
  [[ -x $ETCD ]] || die "etcd not found: run tests/e2e/setup.sh"
  command -v openssl >/dev/null || die "openssl not found: run tests/e2e/setup.sh"
  rm -rf "$d/etcd-data" "$d/pki" "$d/logs" "$d/pids" "$d/state" "$d/env" "$d/kubeconfig" "$d/tokens.csv" \
    "$d/admission.yaml" "$d/webhook-client.kubeconfig"
  mkdir -p "$d/logs"
  read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT < <(free_ports 3)
  ADMIN_TOKEN=$(rand_token)
  WEBHOOK_TOKEN=$(rand_token)
  cat > "$d/state" <<ST
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
ADMIN_TOKEN=$ADMIN_TOKEN
WEBHOOK_TOKEN=$WEBHOOK_TOKEN
ST
  # token,user,uid,"group1,group2"
  cat > "$d/tokens.csv" <<TOK
$ADMIN_TOKEN,e2e-admin,e2e-admin-uid,"system:masters"
$WEBHOOK_TOKEN,$WEBHOOK_SA_USER,e2e-webhook-sa-uid
TOK
  chmod 600 "$d/tokens.csv" "$d/state"
  gen_pki "$d"
  write_files "$d"
  # On any failure below, do not leave half a cluster running.
  STARTING_DIR=$d
  trap 'rc=$?; if ((rc)); then cmd_stop_quiet "$STARTING_DIR"; fi' EXIT
  start_etcd "$d"
  start_apiserver "$d"
  trap - EXIT
  log "cluster up in $((SECONDS - t0))s; env: source $d/env"
  cat "$d/env"
}

cmd_stop_quiet() { cmd_stop "$1" >/dev/null 2>&1 || true; }

cmd_stop() {
  local d=$1
  [[ -d $d ]] || { log "$d does not exist; nothing to stop"; return 0; }
  d=$(cd "$d" && pwd -P)
  stop_pid "$(read_pid "$d" kube-apiserver)" kube-apiserver
  stop_pid "$(read_pid "$d" etcd)" etcd
  rm -f "$d/pids"
  log "stopped cluster in $d"
}

cmd_restart_apiserver() {
  local d t0=$SECONDS
  d=$(cd "$1" && pwd -P)
  load_state "$d"
  pid_alive "$(read_pid "$d" etcd)" etcd || die "etcd of $d is not running"
  stop_pid "$(read_pid "$d" kube-apiserver)" kube-apiserver
  echo "---- restart $(date -Is) ----" >> "$d/logs/kube-apiserver.log"
  start_apiserver "$d"
  log "kube-apiserver restarted in $((SECONDS - t0))s"
}

cmd_env() {
  local d; d=$(cd "$1" && pwd -P)
  [[ -f $d/env ]] || die "$d/env not found"
  cat "$d/env"
}

cmd_status() {
  local d n p rc=0; d=$(cd "$1" && pwd -P)
  for n in etcd kube-apiserver; do
    p=$(read_pid "$d" "$n")
    if pid_alive "$p" "$n"; then echo "$n running (pid $p)"; else echo "$n not running"; rc=1; fi
  done
  return $rc
}

[[ $# -ge 2 ]] || usage
case $1 in
  start) cmd_start "$2" ;;
  stop) cmd_stop "$2" ;;
  env) cmd_env "$2" ;;
  restart-apiserver) cmd_restart_apiserver "$2" ;;
  status) cmd_status "$2" ;;
  *) usage ;;
esac
