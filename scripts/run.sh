#!/usr/bin/env bash
# make run: migrate, then the API and one worker against the local defaults (or the
# environment). Ctrl-C (or SIGTERM) stops both gracefully and waits for them.
set -euo pipefail
bin=${1:-bin}

"$bin/migrate" up

"$bin/api" &
api=$!
"$bin/worker" &
worker=$!

stop() {
  trap '' INT TERM
  kill -TERM "$api" "$worker" 2>/dev/null || true
  wait "$api" "$worker" 2>/dev/null || true
}
trap stop INT TERM

# Whichever exits first (or Ctrl-C) stops the other.
wait -n "$api" "$worker" || true
stop
