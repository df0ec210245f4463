#!/usr/bin/env bash
# An account of a million small files (1,000 folders of 1,000): backed up, one file
# changed and backed up again, restored whole into a folder, verified. Prints each step's
# peak RSS and wall time, Lifeboat's and (with BENCH_RESTIC=1) restic's side by side.
#
# Prints a table. Target (issue "Vault v2"): peak RSS of every Lifeboat step <= 256 MiB,
# memory bounded by the change, not the account. Exit status 0 when every step ran and the
# restore equals the source (targets are reported, not enforced).
#
# Environment:
#   BENCH_WORK      work dir (default bench/work-bigaccount)
#   BENCH_FOLDERS   folders (default 1000)
#   BENCH_FILES     files per folder (default 1000)
#   BENCH_LIFEBOAT  a prebuilt lifeboat binary (default: build this tree in release)
#   BENCH_RESTIC    1 to run restic beside it (backup, backup, restore, check)
#   BENCH_KEEP      1 to keep the source and Lifeboat's restore afterwards
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || dirname "$SCRIPT_DIR")
WORK=${BENCH_WORK:-$SCRIPT_DIR/work-bigaccount}
FOLDERS=${BENCH_FOLDERS:-1000}
FILES=${BENCH_FILES:-1000}
RESTIC=${BENCH_RESTIC:-0}
for v in FOLDERS FILES; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bigaccount.sh: BENCH_$v must be a positive integer" >&2; exit 2; }
done
export RESTIC_REPOSITORY=$WORK/restic-repo
export RESTIC_PASSWORD=lifeboat-bench-throwaway
export RESTIC_CACHE_DIR=$WORK/restic-cache
export LC_ALL=C
TARGET_KIB=$((256 * 1024))

SUDO=()
[[ $(id -u) == 0 ]] || SUDO=(sudo -n)
need() {
  command -v "$1" >/dev/null 2>&1 && return
  "${SUDO[@]}" apt-get update -qq >/dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
[[ $RESTIC == 1 ]] && need restic restic
[[ -x /usr/bin/time ]] || need time time

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
  LB=$(realpath "$BENCH_LIFEBOAT")
else
  (cd "$REPO_ROOT" && cargo build --release -q -p lifeboat)
  LB=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/lifeboat
fi

rm -rf "$WORK"
mkdir -p "$WORK/src/account" "$WORK/run"
SRC=$WORK/src
python3 - "$SRC/account" "$FOLDERS" "$FILES" <<'EOF'
import os, sys
root, folders, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(folders):
    p = os.path.join(root, f"folder-{d:04d}")
    os.mkdir(p)
    for i in range(files):
        with open(os.path.join(p, f"note-{i:04d}.txt"), "w") as f:
            f.write(f"note {d}/{i}: the quarterly figures for team {i % 97} are attached.\n")
EOF
items=$((FOLDERS * FILES))

# measure STEP CMD...: runs CMD under GNU time, output in run/STEP.{out,err}; sets
# rss (KiB) and wall (s) to what it took.
measure() {
  local step=$1
  shift
  /usr/bin/time -f '%M %e' -o "$WORK/run/$step.time" "$@" >"$WORK/run/$step.out" 2>"$WORK/run/$step.err" ||
    { echo "bigaccount.sh: $step failed:" >&2; tail -20 "$WORK/run/$step.err" >&2; exit 1; }
  read -r rss wall <"$WORK/run/$step.time"
}
declare -A RSS WALL
LBH=(--home "$WORK/lifeboat-home")
lb() { measure "lb-$1" "$LB" "${LBH[@]}" "${@:2}"; RSS[lb-$1]=$rss; WALL[lb-$1]=$wall; }
rs() { measure "r-$1" restic "${@:2}"; RSS[r-$1]=$rss; WALL[r-$1]=$wall; }

"$LB" "${LBH[@]}" task add folder big "$SRC" >/dev/null
lb backup1 backup big --json
[[ $RESTIC == 1 ]] && { restic init >/dev/null; rs backup1 backup -q "$SRC"; }

# Day 2: one file of the million changes (34 bytes appended).
echo "one more line, 34 bytes long......" >>"$SRC/account/folder-$(printf %04d $((FOLDERS / 2)))/note-$(printf %04d $((FILES / 3))).txt"
lb backup2 backup big --json
lb_stored=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["stats"]["stored_bytes"])' "$WORK/run/lb-backup2.out")
[[ $RESTIC == 1 ]] && rs backup2 backup -q "$SRC"

# Each restore is checked against the source and removed before the next one: a million
# files take some 4 GB of disk each.
lb restore restore big --snapshot latest --to "$WORK/lb-restore" --json
restored=$(find "$WORK/lb-restore" -mindepth 1 -maxdepth 1 -type d | head -1)
same=yes
diff -rq "$SRC" "$restored" >"$WORK/run/diff.txt" 2>&1 || same=no
[[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$WORK/lb-restore"
if [[ $RESTIC == 1 ]]; then
  rs restore restore latest -q --target "$WORK/r-restore"
  rm -rf "$WORK/r-restore"
fi

lb verify verify
[[ $RESTIC == 1 ]] && rs verify check --read-data -q

mib() { if [[ -n ${1:-} ]]; then echo "$1/1024" | bc -l | xargs printf '%.1f'; else echo -; fi; }
verdict() { if (($1 <= TARGET_KIB)); then echo PASS; else echo FAIL; fi; }
printf '%s items in %s folders, one changed; %s%s\n' "$items" "$FOLDERS" "$("$LB" --version)" \
  "$([[ $RESTIC == 1 ]] && echo "; restic $(restic version | cut -d' ' -f2)")"
printf '%-22s %12s %10s %12s %10s  %-11s %s\n' step "lifeboat MiB" "wall s" "restic MiB" "wall s" target result
printf '%-22s %12s %10s %12s %10s  %-11s %s\n' ---------------------- ------------ ---------- ------------ ---------- ----------- ------
row() {
  printf '%-22s %12s %10s %12s %10s  %-11s %s\n' "$1" "$(mib "${RSS[lb-$2]}")" "${WALL[lb-$2]}" \
    "$(mib "${RSS[r-$2]:-}")" "${WALL[r-$2]:--}" "<= 256 MiB" "$(verdict "${RSS[lb-$2]}")"
}
row "backup, day 1" backup1
row "backup, day 2" backup2
row "restore (whole)" restore
row "verify" verify
printf 'day-2 stored bytes (sealed blobs): %s; restore equals the source: %s\n' "$lb_stored" "$same"

[[ ${BENCH_KEEP:-0} == 1 ]] || rm -rf "$SRC"
[[ $same == yes ]]
