#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document with schemathesis and fails on any 5xx.
#
#   bash scripts/schemathesis.sh
#
# Starts `latchkey serve` on a free loopback port with a throwaway SQLite database, JWT SSO
# configured (so /auth/sso gets past `sso_not_configured`) and an administrator, then runs
# `schemathesis run …/api/openapi.json --checks not_a_server_error`. Requests carry
# `X-Latchkey-Session`; scripts/schemathesis_hooks.py signs in again (as a fresh admin made
# with `latchkey admin create`) whenever the fuzzing has ended, demoted or deactivated that
# session's user. 4xx answers are expected (lock-out guard, last-admin guard, throttling,
# validation); only 5xx, a dropped connection or a server that died fail the run.
#
# Environment (all optional):
#   LATCHKEY_BIN                 the binary (default: `cargo build --bin latchkey` of this tree,
#                                in CARGO_TARGET_DIR, default ~/.cache/latchkey-target)
#   SCHEMATHESIS_VENV            the virtualenv (default ~/.cache/latchkey-venv)
#   SCHEMATHESIS_MAX_EXAMPLES    test cases per operation and phase (default 100)
#   SCHEMATHESIS_TIME_LIMIT      seconds before the run is stopped and failed (default 420)
#   SCHEMATHESIS_CHECKS          checks to run (default not_a_server_error)
#   SCHEMATHESIS_SEED            a seed, to replay a run
#   SCHEMATHESIS_DATABASE_URL    an empty database to use instead of the throwaway SQLite one
#                                (e.g. postgres://…, which refuses what SQLite takes: NUL)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-$HOME/.cache/latchkey-venv}
TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
TIME_LIMIT=${SCHEMATHESIS_TIME_LIMIT:-420}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error}

log() { printf 'schemathesis.sh: %s\n' "$*" >&2; }

# --- the binary -------------------------------------------------------------------------
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The build of this tree (a no-op after `cargo test`), copied out of the shared target
# directory so another build cannot swap it during the run.
if [[ -z "${LATCHKEY_BIN:-}" ]]; then
    built=$(CARGO_TARGET_DIR="$TARGET_DIR" nice -n 10 cargo build --bin latchkey \
        --message-format=json-render-diagnostics |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
    cp "$built" "$WORK/latchkey"
    LATCHKEY_BIN="$WORK/latchkey"
fi
BIN=$LATCHKEY_BIN
log "binary: $BIN"

# --- schemathesis, in a virtualenv outside the clone -------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    timeout 600 "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

# --- a server on a free loopback port, with a throwaway database ---------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
export LATCHKEY_DATABASE_URL="${SCHEMATHESIS_DATABASE_URL:-sqlite://$WORK/latchkey.db}"
# Fixed by the environment, so the fuzzing cannot change them (it gets 409 setting_locked):
# - one trusted proxy hop: the hooks' own sign-ins send X-Forwarded-For from TEST-NET-1 and
#   so have a throttle bucket of their own, apart from the fuzzer's failed logins;
# - the JWKS URI on a closed loopback port: a fuzzed setting must never make the server
#   fetch from anywhere else.
export LATCHKEY_FORWARDED_FOR_TRUSTED_HOPS=1
export LATCHKEY_JWT_JWKS_URI="http://127.0.0.1:9/jwks.json"
unset LATCHKEY_LISTEN

random_hex() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
PASSWORD=$(random_hex)
ADMIN_EMAIL="fuzz-admin-0@latchkey.test"

timeout 60 "$BIN" migrate >/dev/null
timeout 60 "$BIN" settings set jwt-shared-secret "$(random_hex)" >/dev/null
timeout 60 "$BIN" settings set jwt-identity-provider-uri "http://127.0.0.1:9/sso" >/dev/null
timeout 60 "$BIN" settings set jwt-enabled true >/dev/null
printf '%s\n' "$PASSWORD" | timeout 60 "$BIN" admin create --email "$ADMIN_EMAIL" --password-stdin >/dev/null

"$BIN" serve --listen "127.0.0.1:$PORT" --log-format json >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 150); do
    if curl -fsS --max-time 2 "$BASE/api/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null || [[ $i == 150 ]]; then
        log "the server did not start"; cat "$WORK/server.log" >&2; exit 1
    fi
    sleep 0.2
done
log "server on $BASE (pid $SERVER_PID)"

TOKEN=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
    -H 'X-Forwarded-For: 192.0.2.1' \
    --data "{\"username\": \"$ADMIN_EMAIL\", \"password\": \"$PASSWORD\"}" \
    "$BASE/api/session" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
curl -fsS --max-time 10 -H "X-Latchkey-Session: $TOKEN" "$BASE/api/user/current" >/dev/null
log "signed in as $ADMIN_EMAIL"

# --- the run -----------------------------------------------------------------------------
export LATCHKEY_FUZZ_BASE="$BASE" LATCHKEY_FUZZ_BIN="$BIN" LATCHKEY_FUZZ_PASSWORD="$PASSWORD" \
    LATCHKEY_FUZZ_TOKEN="$TOKEN"
export SCHEMATHESIS_HOOKS=schemathesis_hooks
export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
seed_args=()
if [[ -n "${SCHEMATHESIS_SEED:-}" ]]; then seed_args=(--seed "$SCHEMATHESIS_SEED"); fi

status=0
# From the work directory: schemathesis keeps its example database in ./.schemathesis.
cd "$WORK"
timeout --kill-after=10 "$TIME_LIMIT" "$VENV/bin/schemathesis" run "$BASE/api/openapi.json" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --workers 1 \
    --request-timeout 20 \
    --max-redirects 0 \
    --suppress-health-check all \
    --report junit --report-dir "$WORK/report" \
    "${seed_args[@]}" || status=$?

# --- verdict -----------------------------------------------------------------------------
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "FAILED: the server died during the run"; tail -50 "$WORK/server.log" >&2; exit 1
fi
# Belt and braces: the access log must show no 5xx and no panic either.
server_errors=$(grep -cE '"status":5[0-9][0-9]|panicked' "$WORK/server.log" || true)
if [[ "$server_errors" != 0 ]]; then
    log "FAILED: the server log shows $server_errors 5xx answers or panics:"
    grep -E '"status":5[0-9][0-9]|panicked|request failed' "$WORK/server.log" | head -40 >&2
    exit 1
fi
if [[ $status == 124 || $status == 137 ]]; then
    log "FAILED: schemathesis did not finish within ${TIME_LIMIT}s"; exit 1
fi
if [[ $status != 0 ]]; then
    log "FAILED: schemathesis exited with $status"; exit "$status"
fi
log "no 5xx"
