#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: venv, pinned dependencies, helm binary, Redis, headless Chromium.
# Re-running is cheap: pip is skipped while pyproject.toml/setup.py are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtual environment .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.recsys-installed
# The editable install maps each package folder one by one, so a new (sub)package needs a re-install:
# the stamp covers the list of package folders too, not only the dependency files.
want=$({ cat pyproject.toml setup.py; find platform features training serving experiments console -name __init__.py \
  -not -path "*/.venv/*" 2>/dev/null | LC_ALL=C sort || true; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing dependencies (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: an unpinned resolution would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
if [ -f scripts/install_helm.sh ]; then
  bash scripts/install_helm.sh >/dev/null
fi
bash scripts/k8s_testenv.sh install || echo "==> WARNING: no local Kubernetes API server (see above); the k8s tests will FAIL"
bash scripts/ensure_redis.sh
# HAProxy as Ray Serve's HTTP ingress (`recsys serve start` uses it when present: ~2x the requests/s of
# Serve's Python proxy on 2 cores, docs/serving.md). Optional: without it serving falls back to the proxy.
if ! command -v haproxy >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> installing haproxy (Debian package)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1; }; } \
    || echo "==> WARNING: could not install haproxy; serving uses Ray Serve's own HTTP proxy"
fi
# Headless Chromium + its WebDriver for the console's browser tests (tests/console; Debian packages, no CDN).
# Not optional for the test suite: without them those tests fail with a message naming this step.
if { ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; } && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  echo "==> installing chromium and chromium-driver (Debian packages, for the console's browser tests)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
            >/dev/null 2>&1; }; } \
    || echo "==> WARNING: could not install chromium/chromium-driver; tests/console will fail until they are installed"
fi
echo "==> environment ready (.venv, helm in .tools/bin, Redis on 127.0.0.1:6379)"
