#!/usr/bin/env bash
# The main job, end to end on a fresh machine (README command 1):
#   set up -> generate data -> build + materialize features (Feast -> Redis) -> train baselines,
#   two-tower retrieval and ranker with Ray Train -> evaluate -> promote -> serve on localhost -> ask.
# Everything it writes goes under var/ (data, feature repo, model store, logs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export RAY_USAGE_STATS_ENABLED=0
PORT=${RECSYS_PORT:-8000}

echo "==> 1/6 generating the synthetic dataset"
recsys data generate
echo "==> 2/6 building offline features, registering them with Feast, materializing to Redis"
recsys features build
recsys features apply
recsys features materialize
echo "==> 3/6 training baselines, two-tower retrieval and ranker (Ray Train), evaluating, promoting"
recsys train all --promote
echo "==> 4/6 starting the serving graph on http://127.0.0.1:${PORT}"
# Write endpoints are closed by default: generate an API key once (mode 600) and start with it.
KEY_FILE=var/secrets/api-key
if [ ! -s "$KEY_FILE" ]; then
  mkdir -p "$(dirname "$KEY_FILE")"
  (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$KEY_FILE")
fi
recsys serve start --port "$PORT" --api-key-file "$KEY_FILE"
echo "API key for POST /v1/events and /admin/* (header X-API-Key), kept in $KEY_FILE: $(cat "$KEY_FILE")"
echo "==> 5/6 asking for recommendations"
recsys recommend 42 --n 10 --url "http://127.0.0.1:${PORT}"
echo "--- the same through the HTTP API (POST /v1/recommendations, n=3):"
curl -sS -X POST "http://127.0.0.1:${PORT}/v1/recommendations" -H 'content-type: application/json' \
  -d '{"user_id": 42, "n": 3}'
echo
echo "--- a user the dataset never saw (id 9999999) clicks item 1; the event is accepted (202):"
curl -sS -X POST "http://127.0.0.1:${PORT}/v1/events" -H 'content-type: application/json' \
  -H "X-API-Key: $(cat "$KEY_FILE")" -d '{"user_id": 9999999, "item_id": 1, "event_type": "click"}'
echo
sleep 1
echo "--- and their next recommendations already use it (POST /v1/recommendations, n=3):"
curl -sS -X POST "http://127.0.0.1:${PORT}/v1/recommendations" -H 'content-type: application/json' \
  -d '{"user_id": 9999999, "n": 3}'
echo
echo "==> 6/6 done. The server keeps running: try http://127.0.0.1:${PORT}/docs ; stop it with: .venv/bin/recsys serve stop --ray"
# The read-only operator console (README "Console"): printed, not started, so the demo stays as fast.
CONSOLE_KEY_FILE=var/secrets/console-read-key
if [ ! -s "$CONSOLE_KEY_FILE" ]; then
  (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(24))' > "$CONSOLE_KEY_FILE")
fi
echo "--- operator console (experiments, models, serving; log in with the key in $CONSOLE_KEY_FILE):"
echo "    .venv/bin/recsys experiments simulate experiments/examples/recommendations.yaml --log var/logs/exposures-demo"
echo "    .venv/bin/recsys console --port 8300 --read-key-file $CONSOLE_KEY_FILE --metrics-url http://127.0.0.1:${PORT}/metrics \\"
echo "      --experiments experiments/examples/recommendations.yaml --exposure-log var/logs/exposures-demo"
echo "    then open http://127.0.0.1:8300/"
