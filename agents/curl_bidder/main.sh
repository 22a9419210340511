#!/bin/sh
# An agent with no SDK and no Python: the System Service over plain HTTP with curl.
# Inside the sandbox there is no network; the only door is the Unix socket in $SYSTEM_SERVICE_SOCKET.
set -eu

api() {  # api METHOD PATH [curl options...]
    method=$1 path=$2
    shift 2
    if [ -n "${SYSTEM_SERVICE_SOCKET:-}" ]; then
        set -- --unix-socket "$SYSTEM_SERVICE_SOCKET" "$@"
    fi
    curl --silent --show-error --fail-with-body -X "$method" \
        -H "Authorization: Bearer $SYNTROPISM_TOKEN" -H "Content-Type: application/json" \
        "$@" "$SYSTEM_SERVICE_URL$path"
}

runs=$(sed -n 's/.*"runs": *\([0-9][0-9]*\).*/\1/p' state.json)
runs=$(( ${runs:-0} + 1 ))

echo "run $runs: balance $(api GET /economic/balance)"
api GET /market/state > market.json
api POST /market/bid -H "Idempotency-Key: $SYNTROPISM_EXECUTION_ID-next" \
    -d '{"bundle": {"cpu_percent": "0.05", "memory_percent": "0.02", "duration_seconds": 2}, "amount": "0.5", "lifetime_cycles": 5}'
echo
printf '{"runs": %d}\n' "$runs" > state.json
