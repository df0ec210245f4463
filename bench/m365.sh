#!/usr/bin/env bash
# Microsoft 365 backup throughput against graphsim at Graph's documented limits.
#
# Builds and runs the `graph` benchmark of the m365 crate (release profile): it starts the
# simulator in-process with a per-request latency and Graph's mailbox limits, backs up every
# user at once, advances one simulated day, backs up again, and prints a table (also kept in
# $BENCH_WORK/m365.txt). See bench/README.md for what the figures mean.
#
# Environment:
#   BENCH_USERS                mailboxes (default 4)
#   BENCH_MESSAGES_PER_FOLDER  messages per generated mail folder (default 250)
#   BENCH_LATENCY_MS           the simulator's latency per request (default 50)
#   BENCH_WORK                 where the table is written (default bench/work)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || dirname "$SCRIPT_DIR")
WORK=${BENCH_WORK:-$SCRIPT_DIR/work}
mkdir -p "$WORK"
for v in BENCH_USERS BENCH_MESSAGES_PER_FOLDER BENCH_LATENCY_MS; do
  if [[ -n ${!v:-} && ! ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "m365.sh: $v must be a positive integer" >&2
    exit 2
  fi
done

echo "m365.sh: building and running the graph benchmark (cargo bench -p m365 --bench graph)" >&2
cd "$REPO_ROOT"
cargo bench -q -p m365 --bench graph | tee "$WORK/m365.txt"
