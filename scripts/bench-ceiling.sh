#!/bin/sh
# The machine's one-write-per-commit ceiling: pgbench with one single-row
# INSERT per transaction, then one single-row UPDATE per transaction, 8 clients, 20 s each,
# on a scratch database of DATABASE_URL's server (created here, dropped on exit).
# `go run ./cmd/bench -ceiling` runs the same scripts beside the queue's own figures.
set -eu

URL=${DATABASE_URL:-postgres://postgres:postgres@localhost:5432/queue?sslmode=disable}
DURATION=${DURATION:-20}
PGBENCH=${PGBENCH:-$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)}
SCRIPTS=$(cd "$(dirname "$0")/../cmd/bench/pgbench" && pwd)
DB=queue_bench_ceiling_$$

case "$URL" in
postgres://* | postgresql://*) ;;
*) echo "bench-ceiling: DATABASE_URL must be a postgres:// URL" >&2; exit 2 ;;
esac
# The same server, another database: replace the URL's path.
ADMIN=$(printf '%s' "$URL" | sed -E 's#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/postgres#')
TARGET=$(printf '%s' "$URL" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/$DB#")

psql "$ADMIN" -qc "CREATE DATABASE $DB"
trap 'psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
trap 'exit 130' INT TERM
psql "$TARGET" -q -v ON_ERROR_STOP=1 -f "$SCRIPTS/setup.sql"

echo "nproc $(nproc); $(psql "$ADMIN" -Atc 'SHOW server_version'); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for s in insert update; do
	echo "== one single-row $(echo $s | tr a-z A-Z) per transaction, 8 clients, ${DURATION} s"
	"$PGBENCH" -n -M prepared -c 8 -j 2 -T "$DURATION" -f "$SCRIPTS/$s.sql" "$TARGET" |
		grep -E '^(tps|latency average|number of transactions actually processed)'
done
