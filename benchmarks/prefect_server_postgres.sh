#!/usr/bin/env bash
# A Prefect server on PostgreSQL, for push_latency.py and delivery_burst.py (--api):
#
#   bash scripts/dev.sh bash benchmarks/prefect_server_postgres.sh &
#   bash scripts/dev.sh python benchmarks/push_latency.py --api http://127.0.0.1:4299/api
#
# A fresh database `prefect_bench` on the local PostgreSQL (127.0.0.1:5432, user postgres) each
# time: the server slows as its flow runs pile up, so figures are taken on a fresh one.
set -euo pipefail
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS prefect_bench WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE prefect_bench"
export PREFECT_HOME="${TMPDIR:-/tmp}/prefect-bench-home"
export PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/prefect_bench"
export PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false
exec prefect server start --port 4299 --host 127.0.0.1
