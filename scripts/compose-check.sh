#!/usr/bin/env bash
# Validates docker-compose.yml without a Docker engine: `docker-compose config -q` parses it,
# checks the schema and resolves every ${VAR:-default}. Also checks that each variable the
# configuration reads (internal/config) can be set through the compose file.
# Installs the Debian docker-compose package when it is missing (needs root, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-compose >/dev/null 2>&1; then
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends docker-compose; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "compose-check: could not install docker-compose with apt-get" >&2
    exit 1
  fi
  rm -f "$log"
fi

docker-compose -f docker-compose.yml config -q

missing=0
vars=$(find internal/config -name '*.go' ! -name '*_test.go' -exec \
    grep -ohE '(r\.[a-zA-Z]+|lookup)\("[A-Z][A-Z0-9_]*"' {} + | grep -oE '"[A-Z0-9_]+"' | tr -d '"' | sort -u)
if [ -z "$vars" ]; then
  echo "compose-check: found no variables in internal/config; update this script" >&2
  exit 1
fi
for var in $vars; do
  if ! grep -qE "^ +${var}: \\$\\{${var}:-" docker-compose.yml; then
    echo "compose-check: ${var} is read by internal/config but not settable in docker-compose.yml" >&2
    missing=1
  fi
done
exit "$missing"
