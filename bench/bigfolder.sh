#!/usr/bin/env bash
# One folder of 100,000 small files, one of them changed: what the second backup stores
# and how much memory it takes, Lifeboat and restic side by side in one run.
#
# Prints a table. Targets (issue "Vault v2"): day-2 stored bytes <= 256 KiB; peak RSS of
# the day-2 backup <= 64 MiB. Exit status 0 when both tools ran (targets are reported,
# not enforced).
#
# Environment:
#   BENCH_WORK      work dir (default bench/work-bigfolder)
#   BENCH_FILES     files in the folder (default 100000)
#   BENCH_LIFEBOAT  a prebuilt lifeboat binary (default: build this tree in release)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || dirname "$SCRIPT_DIR")
WORK=${BENCH_WORK:-$SCRIPT_DIR/work-bigfolder}
FILES=${BENCH_FILES:-100000}
[[ $FILES =~ ^[1-9][0-9]*$ ]] || { echo "bigfolder.sh: BENCH_FILES must be a positive integer" >&2; exit 2; }
export RESTIC_REPOSITORY=$WORK/restic-repo
export RESTIC_PASSWORD=lifeboat-bench-throwaway
export RESTIC_CACHE_DIR=$WORK/restic-cache
export LC_ALL=C

SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo -n)
need() {
  command -v "$1" >/dev/null 2>&1 && return
  "${SUDO[@]}" apt-get update -qq >/dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need restic restic
[[ -x /usr/bin/time ]] || need time time

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
  LB=$(realpath "$BENCH_LIFEBOAT")
else
  (cd "$REPO_ROOT" && cargo build --release -q -p lifeboat)
  LB=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/lifeboat
fi

rm -rf "$WORK"
mkdir -p "$WORK/src/big"
SRC=$WORK/src
python3 - "$SRC/big" "$FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"note-{i:06d}.txt"), "w") as f:
        f.write(f"note {i}: the quarterly figures for team {i % 97} are attached.\n")
EOF

# rss_kib STEP CMD...: runs CMD under GNU time; prints its peak RSS in KiB.
rss_kib() {
  local step=$1
  shift
  /usr/bin/time -f '%M' -o "$WORK/$step.rss" "$@" >"$WORK/$step.out" 2>"$WORK/$step.err" ||
    { echo "bigfolder.sh: $step failed:" >&2; cat "$WORK/$step.err" >&2; exit 1; }
  cat "$WORK/$step.rss"
}
du_bytes() { du -sb "$1" | cut -f1; }

LBH=(--home "$WORK/lifeboat-home")
"$LB" "${LBH[@]}" task add folder big "$SRC" >/dev/null
rss_kib lb1 "$LB" "${LBH[@]}" backup big --json >/dev/null
lb_before=$(du_bytes "$WORK/lifeboat-home/objects")
restic init >/dev/null
rss_kib r1 restic backup -q "$SRC" >/dev/null
r_before=$(du_bytes "$RESTIC_REPOSITORY")

# Day 2: one file of the 100,000 changes (34 bytes appended).
echo "one more line, 34 bytes long......" >>"$SRC/big/note-054321.txt"
lb_rss=$(rss_kib lb2 "$LB" "${LBH[@]}" backup big --json)
lb_after=$(du_bytes "$WORK/lifeboat-home/objects")
lb_stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["stats"]["stored_bytes"])' "$WORK/lb2.out")
r_rss=$(rss_kib r2 restic backup -q "$SRC")
r_after=$(du_bytes "$RESTIC_REPOSITORY")

lb_added=$((lb_after - lb_before))
r_added=$((r_after - r_before))
verdict() { if (($1 <= $2)); then echo PASS; else echo FAIL; fi; }
printf '%s files in one folder, one changed; %s; restic %s\n' "$FILES" "$("$LB" --version)" "$(restic version | cut -d' ' -f2)"
printf '%-34s %10s %10s  %-12s %s\n' metric lifeboat restic target result
printf '%-34s %10s %10s  %-12s %s\n' ---------------------------------- ---------- ---------- ------------ ------
printf '%-34s %10d %10d  %-12s %s\n' "day-2 bytes added to the store" "$lb_added" "$r_added" "<= 262144" "$(verdict "$lb_added" 262144)"
printf '%-34s %10d %10s  %-12s %s\n' "day-2 stored bytes (sealed blobs)" "$lb_stored" "-" "-" "-"
printf '%-34s %10.1f %10.1f  %-12s %s\n' "day-2 peak RSS (MiB)" "$(echo "$lb_rss/1024" | bc -l)" "$(echo "$r_rss/1024" | bc -l)" "<= 64 MiB" "$(verdict "$lb_rss" 65536)"
