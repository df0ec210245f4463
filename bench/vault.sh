#!/usr/bin/env bash
# Lifeboat's vault against restic, side by side, in one run.
#
# Generates (or reuses) the shared mail-like corpus, then for both tools under the same
# conditions: backup 1, the day-2 change set, backup 2, full restores and one-message
# restores, every restore checked byte for byte against the source. Prints a table and
# writes $WORK/results.json. Exit status: 0 when the run was correct (targets are
# reported, not enforced); non-zero on any tool error or restore mismatch.
#
# Environment:
#   BENCH_WORK    work dir (default bench/work)
#   BENCH_REPEAT  rounds of backup 1 and of each restore; the table shows medians (default 3)
#   BENCH_TMPFS   tmpfs for the extra in-memory full restores (default /dev/shm; empty: skip)
#   BENCH_KEEP=1  keep the on-disk restores
#   BENCH_LIFEBOAT  a prebuilt lifeboat binary to use instead of building this tree
#   BENCH_PROPTEST_CASES=N  instead of the benchmark, run the vault's property tests with N
#                 cases each (10000 for the long run; CI runs 1000)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || dirname "$SCRIPT_DIR")
GEN=$REPO_ROOT/../shared/bench/gen_corpus.py
[[ -f $GEN ]] || GEN=$SCRIPT_DIR/../../shared/bench/gen_corpus.py
WORK=${BENCH_WORK:-$SCRIPT_DIR/work}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd -P) # absolute, no symlinks: restic restores under the full path
REPEAT=${BENCH_REPEAT:-3}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || {
  echo "vault.sh: BENCH_REPEAT must be a positive integer" >&2
  exit 2
}
TMPFS=${BENCH_TMPFS-/dev/shm}

# Checksums documented in shared/bench/README.md.
BASE_SUM=8f54cf70a1e29abe73616e97197d19bb2a7e97c3e976249c85437c7ae071f51e
MUT_SUM=0cc4ada494cce4f4cb9430a61406cdd4c9eb93dfaf15d6ac423795ed5b4df55f

BASE=$WORK/base            # pristine corpus, reused across runs when its checksum matches
SRC=$WORK/src              # the copy both tools back up (mutated in place for day 2)
LB_HOME=$WORK/lifeboat-home
RESTIC_REPO=$WORK/restic-repo
SCRATCH=$WORK/scratch      # homes/repos of the extra backup-1 rounds
RUN=$WORK/run              # per-step timings and tool output of this run
TASK=bench

export RESTIC_REPOSITORY=$RESTIC_REPO
export RESTIC_PASSWORD=lifeboat-bench-throwaway
export RESTIC_CACHE_DIR=$WORK/restic-cache
export LC_ALL=C

if [[ -n ${BENCH_PROPTEST_CASES:-} ]]; then
  [[ $BENCH_PROPTEST_CASES =~ ^[1-9][0-9]*$ ]] || {
    echo "vault.sh: BENCH_PROPTEST_CASES must be a positive integer" >&2
    exit 2
  }
  cd "$REPO_ROOT"
  LIFEBOAT_PROPTEST_CASES=$BENCH_PROPTEST_CASES exec cargo test --release -p vault --test props
fi

T0=$SECONDS
log() { printf '[%4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() {
  printf 'vault.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

# --- tools -------------------------------------------------------------------------------

SUDO=()
if [[ $(id -u) != 0 ]]; then SUDO=(sudo -n); fi
APT_UPDATED=
apt_install() {
  log "installing $1 (apt-get)"
  if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >"$WORK/apt.log" 2>&1; then
    if [[ -z $APT_UPDATED ]]; then
      "${SUDO[@]}" apt-get update -q >>"$WORK/apt.log" 2>&1 || die "apt-get update failed (see $WORK/apt.log)"
      APT_UPDATED=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >>"$WORK/apt.log" 2>&1 ||
      die "cannot install $1 (see $WORK/apt.log)"
  fi
}
command -v python3 >/dev/null || die "python3 is needed"
command -v restic >/dev/null || apt_install restic
[[ -x /usr/bin/time ]] || apt_install time
RESTIC_VERSION=$(restic version | head -n1)

if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
  LB=$(realpath "$BENCH_LIFEBOAT")
  log "using the prebuilt $LB (BENCH_LIFEBOAT)"
else
  log "building lifeboat (cargo build --release -p lifeboat)"
  (cd "$REPO_ROOT" && cargo build --release -q -p lifeboat) || die "cargo build failed"
  LB=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/lifeboat
  [[ $LB == /* ]] || LB=$REPO_ROOT/$LB
fi
[[ -x $LB ]] || die "no binary at $LB"
LB_VERSION=$("$LB" --version)
if [[ -n ${BENCH_LIFEBOAT:-} ]]; then
  LB_VERSION+=" (prebuilt $LB)"
elif rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null); then
  [[ -z $(git -C "$REPO_ROOT" status --porcelain -- shared Cargo.toml Cargo.lock 2>/dev/null) ]] ||
    rev+=" + uncommitted changes"
  LB_VERSION+=" (built from $rev)"
fi

# --- helpers -----------------------------------------------------------------------------

# The corpus checksum exactly as shared/bench/README.md defines it.
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }
# "BYTES FILES": sum of regular-file sizes (apparent) and their count under a folder.
tree_stat() {
  python3 - "$1" <<'EOF'
import os, sys
b = n = 0
for d, _, fs in os.walk(sys.argv[1]):
    for f in fs:
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            b += os.path.getsize(p); n += 1
print(b, n)
EOF
}
# Read every source byte so both tools see the same (fully cached) page-cache state.
# (Not `tar cf /dev/null`: GNU tar skips reading file data when the archive is /dev/null.)
warm() { find "$1" -type f -print0 | xargs -0 cat >/dev/null; }
metric() { printf '%s %s\n' "$1" "$2" >>"$RUN/metrics"; }
# Alternate which tool goes first: odd rounds Lifeboat, even rounds restic.
order() { if (($1 % 2)); then echo lb restic; else echo restic lb; fi; }
keep() { [[ ${BENCH_KEEP:-} == 1 ]]; }

# timed STEP CMD...: runs CMD under GNU time (wall, user, sys, max RSS KiB) into
# $RUN/STEP.time, stdout to $RUN/STEP.out, stderr to $RUN/STEP.err; any non-zero exit
# (lifeboat's 3 = some items had problems included) fails the run. GNU time's wall clock
# has 10 ms resolution, so the wall time is also taken in microseconds into $RUN/STEP.wall.
# Dirty pages are flushed first, so no step pays for the writeback of an earlier one (the
# corpus copy, the other tool's repository or restore).
timed() {
  local step=$1 rc=0 wall user sys rss t0 t1
  shift
  log "$step: $*"
  sync
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%e %U %S %M' -o "$RUN/$step.time" "$@" >"$RUN/$step.out" 2>"$RUN/$step.err" || rc=$?
  t1=$EPOCHREALTIME
  echo "$((${t1/./} - ${t0/./}))" >"$RUN/$step.wall"
  if ((rc != 0)); then
    head -n 10 "$RUN/$step.out" >&2 || true
    tail -n 20 "$RUN/$step.err" >&2 || true
    die "$step exited with status $rc (output in $RUN/$step.{out,err})"
  fi
  read -r wall user sys rss < <(tail -n1 "$RUN/$step.time")
  wall=$(python3 -c "print('%.3f' % ($(cat "$RUN/$step.wall") / 1e6))")
  log "$step: ${wall}s wall, ${user}s user, ${sys}s sys, $((rss / 1024)) MiB max RSS"
}

# check_tree DIR WHAT: DIR must hold exactly the mutated corpus, byte for byte.
check_tree() {
  local got
  got=$(tree_sum "$1")
  if [[ $got != "$MUT_SUM" ]]; then
    diff -rq "$SRC" "$1" 2>&1 | head -n 20 >&2 || true
    die "$2: restore differs from the source (checksum $got, want $MUT_SUM)"
  fi
  log "$2: byte-equal to the source"
}

# check_one FILE DIR WHAT: FILE is the chosen message, byte for byte, and DIR holds nothing else.
check_one() {
  local n
  [[ -f $1 ]] || die "$3: $1 was not restored"
  cmp -s "$1" "$SRC/$ONE" || die "$3: $1 differs from $SRC/$ONE"
  n=$(find "$2" -type f | wc -l)
  ((n == 1)) || die "$3: restored $n files, want 1"
  log "$3: byte-equal to the source"
}

# lb_target DIR: the one "Lifeboat Restore <time>" folder Lifeboat made in DIR.
lb_target() {
  local t
  shopt -s nullglob
  t=("$1/Lifeboat Restore "*)
  shopt -u nullglob
  ((${#t[@]} == 1)) || die "expected one 'Lifeboat Restore …' folder in $1, found ${#t[@]}"
  printf '%s' "${t[0]}"
}

# --- clean the previous run, corpus ------------------------------------------------------

log "work dir $WORK; $REPEAT round(s) of backup 1 and of each restore"
rm -rf "${WORK:?}/src" "$LB_HOME" "$RESTIC_REPO" "$RESTIC_CACHE_DIR" "$SCRATCH" "$RUN" \
  "$WORK"/restore* "$WORK/results.json" "$WORK/results.txt"
mkdir -p "$RUN" "$SCRATCH"

MEM=
if [[ -n $TMPFS ]]; then
  if [[ -d $TMPFS && -w $TMPFS ]]; then
    MEM=$(mktemp -d "$TMPFS/lifeboat-bench.XXXXXX")
    trap 'rm -rf "$MEM"' EXIT
  else
    log "no writable $TMPFS: skipping the in-memory restores"
  fi
fi

if [[ -d $BASE ]] && [[ $(tree_sum "$BASE") == "$BASE_SUM" ]]; then
  log "reusing the corpus in $BASE (checksum matches)"
else
  rm -rf "$BASE"
  [[ -f $GEN ]] || die "no corpus generator at $GEN"
  log "generating the corpus into $BASE (~1 min)"
  python3 "$GEN" "$BASE" >"$WORK/gen.log" 2>&1 || die "gen_corpus.py failed (see $WORK/gen.log)"
  got=$(tree_sum "$BASE")
  [[ $got == "$BASE_SUM" ]] || die "generated corpus checksum $got, want $BASE_SUM"
  log "corpus generated, checksum matches"
fi
log "copying the corpus to $SRC"
cp -a --reflink=auto "$BASE" "$SRC"
read -r CORPUS_BYTES CORPUS_FILES < <(tree_stat "$SRC")
metric corpus_bytes "$CORPUS_BYTES"
metric corpus_files "$CORPUS_FILES"
# One message: the first .eml of the first folder, in sorted order (fixed by the generator).
ONE=$(cd "$SRC" && python3 -c 'import glob; print(min(glob.glob("mailbox/**/*.eml", recursive=True)))')
[[ -n $ONE ]] || die "no .eml in the corpus"
log "one-message restore will use $ONE"

# --- backup 1 ----------------------------------------------------------------------------
# Round 1 goes into the real home/repository; later rounds into scratch ones, thrown away.

backup1() { # TOOL ROUND
  local tool=$1 r=$2 home=$LB_HOME repo=$RESTIC_REPO cache=$RESTIC_CACHE_DIR
  if ((r > 1)); then
    home=$SCRATCH/lifeboat-home repo=$SCRATCH/restic-repo cache=$SCRATCH/restic-cache
    rm -rf "$home" "$repo" "$cache"
  fi
  if [[ $tool == lb ]]; then
    "$LB" --home "$home" task add files "$TASK" "$SRC" >"$RUN/lb_task_add.$r.out" 2>&1 ||
      die "lifeboat task add failed: $(cat "$RUN/lb_task_add.$r.out")"
    warm "$SRC"
    timed "lb_backup1.$r" "$LB" --home "$home" backup "$TASK" --json
  else
    restic -r "$repo" --cache-dir "$cache" init --repository-version 2 --quiet >"$RUN/restic_init.$r.out" 2>&1 ||
      die "restic init failed: $(cat "$RUN/restic_init.$r.out")"
    warm "$SRC"
    timed "restic_backup1.$r" restic -r "$repo" --cache-dir "$cache" backup --json --quiet "$SRC"
  fi
  if ((r > 1)); then rm -rf "$home" "$repo" "$cache"; fi
}

for ((r = 1; r <= REPEAT; r++)); do
  for tool in $(order "$r"); do backup1 "$tool" "$r"; done
  if ((r == 1)); then
    read -r b n < <(tree_stat "$LB_HOME")
    metric lb_stored1 "$b"
    metric lb_objects1 "$(tree_stat "$LB_HOME/objects" | cut -d' ' -f2)"
    read -r b n < <(tree_stat "$RESTIC_REPO")
    metric restic_stored1 "$b"
    metric restic_objects1 "$n"
  fi
done

# --- day 2 -------------------------------------------------------------------------------

timed mutate.1 python3 "$GEN" "$SRC" --mutate
got=$(tree_sum "$SRC")
[[ $got == "$MUT_SUM" ]] || die "mutated corpus checksum $got, want $MUT_SUM"
read -r MUT_BYTES MUT_FILES < <(tree_stat "$SRC")
metric mutated_bytes "$MUT_BYTES"
metric mutated_files "$MUT_FILES"

warm "$SRC"
timed lb_backup2.1 "$LB" --home "$LB_HOME" backup "$TASK" --json
warm "$SRC"
timed restic_backup2.1 restic backup --json --quiet "$SRC"

read -r b n < <(tree_stat "$LB_HOME")
metric lb_stored2 "$b"
metric lb_objects2 "$(tree_stat "$LB_HOME/objects" | cut -d' ' -f2)"
read -r b n < <(tree_stat "$RESTIC_REPO")
metric restic_stored2 "$b"
metric restic_objects2 "$n"

# Both stores must check clean (not part of the comparison).
timed lb_verify.1 "$LB" --home "$LB_HOME" verify
timed restic_check.1 restic check

# --- full restores -----------------------------------------------------------------------
# Nothing is dropped from the page cache (both repositories were just written and are
# cached). On disk into the work dir, as a user would; then, if a tmpfs is at hand, into
# memory, which takes the filesystem's file-creation cost out of the figure.
# The on-disk restores are all kept until the last one is done: on some filesystems
# (ext4 without a journal) creating files soon after many were deleted is several times
# slower, so deleting one tool's restore would slow down the next tool's.

restore_full() { # TOOL ROUND KIND PARENT
  local tool=$1 r=$2 kind=$3 dir=$4/restore-$1-$2 step=$1_restore_$3.$2 got
  if [[ $tool == lb ]]; then
    timed "$step" "$LB" --home "$LB_HOME" restore "$TASK" --snapshot latest --to "$dir" --json
    got=$(lb_target "$dir") || exit 1
  else
    timed "$step" restic restore latest --target "$dir" --quiet
    got=$dir$SRC
  fi
  check_tree "$got" "$step"
  if [[ $kind == mem ]]; then rm -rf "$dir"; fi
}

for ((r = 1; r <= REPEAT; r++)); do
  for tool in $(order "$r"); do restore_full "$tool" "$r" disk "$WORK"; done
done
if ! keep; then rm -rf "$WORK"/restore-*; fi
if [[ -n $MEM ]]; then
  avail=$(df --output=avail -B1 "$MEM" | tail -n1)
  if ((avail > MUT_BYTES * 3 / 2)); then
    for ((r = 1; r <= REPEAT; r++)); do
      for tool in $(order "$r"); do restore_full "$tool" "$r" mem "$MEM"; done
    done
  else
    log "$TMPFS has $avail bytes free, too few: skipping the in-memory restores"
  fi
fi

# --- one-message restores ----------------------------------------------------------------

restore_one() { # TOOL ROUND
  local tool=$1 r=$2 dir=$WORK/restore1-$1-$2 step=$1_restore1.$2 got
  if [[ $tool == lb ]]; then
    timed "$step" "$LB" --home "$LB_HOME" restore "$TASK" --snapshot latest --to "$dir" --include "$ONE" --json
    got=$(lb_target "$dir") || exit 1
    check_one "$got/$ONE" "$dir" "$step"
  else
    timed "$step" restic restore latest --target "$dir" --include "$SRC/$ONE" --quiet
    check_one "$dir$SRC/$ONE" "$dir" "$step"
  fi
  if ! keep; then rm -rf "$dir"; fi
}

for ((r = 1; r <= REPEAT; r++)); do
  for tool in $(order "$r"); do restore_one "$tool" "$r"; done
done

# --- report ------------------------------------------------------------------------------

log "all restores verified; total bench time $((SECONDS - T0)) s"
python3 - "$RUN" "$WORK/results.json" "$WORK/results.txt" "$LB_VERSION" "$RESTIC_VERSION" "$ONE" "$REPEAT" <<'EOF'
import glob, json, os, statistics, sys, time
run, out_json, out_txt, lb_version, restic_version, one, repeat = sys.argv[1:8]

m = {}
for line in open(os.path.join(run, "metrics")):
    k, v = line.split()
    m[k] = int(v)

def step(path):
    _, user, sys_, rss = open(path + ".time").read().split("\n")[-2].split()
    wall = int(open(path + ".wall").read()) / 1e6
    return {"wall_s": wall, "user_s": float(user), "sys_s": float(sys_),
            "cpu_s": float(user) + float(sys_), "max_rss_kib": int(rss)}

steps = {}  # name -> [round figures]
for t in sorted(glob.glob(os.path.join(run, "*.time"))):
    name, r = os.path.basename(t)[:-5].rsplit(".", 1)
    steps.setdefault(name, []).append(dict(step(t[:-5]), round=int(r)))

def agg(name):
    """Medians of wall and CPU over the rounds, the largest peak RSS."""
    rs = steps.get(name)
    if not rs:
        return None
    return {"wall_s": statistics.median(x["wall_s"] for x in rs),
            "cpu_s": statistics.median(x["cpu_s"] for x in rs),
            "rss_mib": max(x["max_rss_kib"] for x in rs) / 1024, "rounds": len(rs)}

def out_json_of(name):
    try:
        return json.load(open(os.path.join(run, name + ".out")))
    except Exception as e:  # informative only: the figures come from time and the repos
        return {"unparsed": str(e)}

def restic_summary(name):
    for line in open(os.path.join(run, name + ".out")):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("message_type") == "summary":
            return d
    return {}

GB, MB = 1e9, 1e6
corpus, mutated = m["corpus_bytes"], m["mutated_bytes"]
fig = {}
for tool, p in (("lifeboat", "lb"), ("restic", "restic")):
    b1, b2 = agg(p + "_backup1"), agg(p + "_backup2")
    rd, rm, r1 = agg(p + "_restore_disk"), agg(p + "_restore_mem"), agg(p + "_restore1")
    fig[tool] = {
        "backup1_cpu_s": b1["cpu_s"],
        "backup1_cpu_s_per_gb": b1["cpu_s"] / (corpus / GB),
        "backup1_wall_s": b1["wall_s"],
        "stored1_mb": m[p + "_stored1"] / MB,
        "backup2_cpu_s": b2["cpu_s"],
        "day2_added_mb": (m[p + "_stored2"] - m[p + "_stored1"]) / MB,
        "day2_objects": m[p + "_objects2"] - m[p + "_objects1"],
        "restore_wall_s": rd["wall_s"],
        "restore_mb_s": mutated / MB / rd["wall_s"],
        "restore_cpu_s": rd["cpu_s"],
        "restore_mem_wall_s": rm["wall_s"] if rm else None,
        "restore_mem_mb_s": mutated / MB / rm["wall_s"] if rm else None,
        "restore1_wall_s": r1["wall_s"],
        "backup_rss_mib": max(b1["rss_mib"], b2["rss_mib"]),
        "restore_rss_mib": max(x["rss_mib"] for x in (rd, rm, r1) if x),
    }

# (key, label, format, target kind, target value)
rows = [
    ("backup1_cpu_s", "backup 1 CPU-s (user+sys)", "{:.2f}", None, None),
    ("backup1_cpu_s_per_gb", "backup 1 CPU-s/GB", "{:.2f}", "ratio<=", 0.45),
    ("backup1_wall_s", "backup 1 wall s", "{:.2f}", None, None),
    ("stored1_mb", "stored after backup 1 (MB)", "{:.1f}", "ratio<=", 1.0),
    ("backup2_cpu_s", "backup 2 CPU-s (user+sys)", "{:.2f}", None, None),
    ("day2_added_mb", "day-2 added bytes (MB)", "{:.2f}", "ratio<=", 1.0),
    ("day2_objects", "day-2 objects written", "{:d}", None, None),
    ("restore_wall_s", "full restore wall s (disk)", "{:.2f}", None, None),
    ("restore_mb_s", "full restore MB/s (disk)", "{:.1f}", "ratio>=", 1.5),
    ("restore_cpu_s", "full restore CPU-s (disk)", "{:.2f}", None, None),
    ("restore_mem_wall_s", "full restore wall s (tmpfs)", "{:.2f}", None, None),
    ("restore_mem_mb_s", "full restore MB/s (tmpfs)", "{:.1f}", None, None),
    ("restore1_wall_s", "one-item restore s", "{:.3f}", None, None),
    ("backup_rss_mib", "peak RSS backup (MiB)", "{:.1f}", "lifeboat<=", 256),
    ("restore_rss_mib", "peak RSS restore (MiB)", "{:.1f}", "lifeboat<=", 256),
]
table, results = [], {}
for key, label, fmt, kind, tv in rows:
    a, b = fig["lifeboat"][key], fig["restic"][key]
    if a is None or b is None:
        table.append([label, "n/a", "n/a", "-", "-", "-"])
        results[key] = {"label": label, "lifeboat": a, "restic": b, "ratio": None,
                        "target": None, "pass": None}
        continue
    ratio = a / b if b else None
    if kind is None:
        target, ok = "", None
    elif kind == "ratio<=":
        target, ok = "ratio <= %g" % tv, ratio is not None and ratio <= tv
    elif kind == "ratio>=":
        target, ok = "ratio >= %g" % tv, ratio is not None and ratio >= tv
    else:
        target, ok = "<= %g MiB" % tv, a <= tv
    results[key] = {"label": label, "lifeboat": a, "restic": b, "ratio": ratio,
                    "target": target or None, "pass": ok}
    table.append([label, fmt.format(a), fmt.format(b),
                  "-" if ratio is None else ("%.3f" if ratio < 0.1 else "%.2f") % ratio,
                  target or "-", {None: "-", True: "PASS", False: "FAIL"}[ok]])

head = ["metric", "lifeboat", "restic", "lifeboat/restic", "target", "result"]
w = [max(len(r[i]) for r in table + [head]) for i in range(len(head))]
def fmt_row(r):
    return "  ".join(c.ljust(w[i]) if i in (0, 4, 5) else c.rjust(w[i])
                     for i, c in enumerate(r)).rstrip()
lines = [
    "Lifeboat vault vs restic: corpus %d files, %.3f GB (day 2: %d files, %.3f GB)" % (
        m["corpus_files"], corpus / GB, m["mutated_files"], mutated / GB),
    "%s; %s; %d cores; backup 1 and restores: median of %s round(s), peak RSS: largest"
    % (lb_version, restic_version, os.cpu_count() or 0, repeat),
    "",
    fmt_row(head),
    fmt_row(["-" * x for x in w]),
] + [fmt_row(r) for r in table]
failed = [r[0] for r in table if r[5] == "FAIL"]
lines += ["", "targets: %d of %d met%s" % (
    sum(1 for r in table if r[5] == "PASS"), sum(1 for r in table if r[5] in ("PASS", "FAIL")),
    "; missed: " + ", ".join(failed) if failed else "")]
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
open(out_txt, "w").write(text)

doc = {
    "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "lifeboat_version": lb_version, "restic_version": restic_version,
    "cores": os.cpu_count(), "rounds": int(repeat),
    "corpus": {"files": m["corpus_files"], "bytes": corpus,
               "mutated_files": m["mutated_files"], "mutated_bytes": mutated},
    "one_item": one,
    "figures": fig,
    "table": results,
    "targets_met": not failed,
    "raw": {"metrics": m, "steps": steps,
            "lifeboat_backup1": out_json_of("lb_backup1.1"),
            "lifeboat_backup2": out_json_of("lb_backup2.1"),
            "lifeboat_restore": out_json_of("lb_restore_disk.1"),
            "lifeboat_restore1": out_json_of("lb_restore1.1"),
            "restic_backup1": restic_summary("restic_backup1.1"),
            "restic_backup2": restic_summary("restic_backup2.1")},
}
with open(out_json, "w") as f:
    json.dump(doc, f, indent=2)
print("results: " + out_json)
EOF
