#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy with warnings as errors,
# the dependency rule, then all tests. This is the README's test command and what CI runs.
# It installs what the tests need, idempotently, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# The unreadable-file tests drop root privileges with setpriv (util-linux).
if ! command -v setpriv >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq util-linux >/dev/null
  fi
fi
# The Google simulator makes its test service accounts' RSA keys with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq openssl >/dev/null
  fi
fi
# The IMAP source's tests run against a private Dovecot (Debian's dovecot-imapd).
bash infra/dovecot.sh install
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== dependency rule: the domain, ports, vault and engine crates stay free of AWS and HTTP"
for crate in domain ports vault engine; do
  if cargo tree -p "$crate" -e normal --prefix none --locked 2>/dev/null \
      | grep -E '^(aws-|reqwest|hyper |axum)' >/dev/null; then
    echo "crate $crate depends on an AWS or HTTP crate" >&2
    exit 1
  fi
done

echo "== dependency rule: only aws-adapters uses the AWS SDK directly"
for sdk in aws-config aws-sdk-s3 aws-sdk-dynamodb aws-sdk-kms aws-sdk-sqs aws-sdk-eventbridge; do
  users=$(cargo tree -i "$sdk" -e normal --depth 1 --prefix none --locked 2>/dev/null \
    | grep -v "^$sdk " | sed 's/ .*//' | sort -u | grep -vx aws-adapters || true)
  if [ -n "$users" ]; then
    echo "$sdk is used directly by: $users (only aws-adapters may)" >&2
    exit 1
  fi
done

echo "== layering: nothing above the engine uses the vault directly"
# The engine is the one home of use cases: the connectors, the HTTP API, the command line, the job runner,
# the Lambda wiring and the functions reach stored data only through it.
for crate in api lifeboat jobs lambda-wiring connectors folder imap m365 lambda-scheduler lambda-fetcher lambda-restorer lambda-api; do
  deps=$(cargo tree -p "$crate" -e normal --depth 1 --prefix none --locked)
  if grep -E '^vault ' <<<"$deps" >/dev/null; then
    echo "crate $crate depends on vault directly; go through the engine's use cases" >&2
    exit 1
  fi
done

echo "== catalog keys are built only in ports::catalog_keys"
# Any code, tests included, that spells a catalog key itself would drift from the layout.
if grep -rnE --include='*.rs' '"(t#|task#|account#|job#|run#|state#|sched#|schedrun#|tenant-key")|#(snap|pend)#' \
    shared functions tests | grep -v '^shared/ports/src/catalog_keys.rs:'; then
  echo "catalog keys spelled outside shared/ports/src/catalog_keys.rs (use its constructors)" >&2
  exit 1
fi

echo "== the local folder is a connector like any other"
# No code outside the folder connector (and the list of connectors) asks whether a task
# is a folder.
if grep -rnE --include='*.rs' 'folder::(CONNECTOR|ACCOUNT)|SourceConfig::Files|FILES_ACCOUNT|(==|!=) *"(folder|files)"|"(folder|files)" *(==|!=)|"(folder|files)" *=>' \
    shared/*/src functions/*/src | grep -vE '^shared/(folder|connectors)/'; then
  echo "a branch outside the folder connector names the folder kind" >&2
  exit 1
fi

echo "== no source file over 800 lines (tests aside)"
long=$(find shared functions -name '*.rs' -path '*/src/*' ! -name tests.rs ! -path '*/tests/*' \
  -exec awk 'END { if (NR > 800) print FILENAME ": " NR " lines" }' {} \;)
if [ -n "$long" ]; then
  echo "$long" >&2
  echo "files over 800 lines: split them along their seams" >&2
  exit 1
fi

echo "== SAM template: cfn-lint and sam validate --lint"
bash infra/lint-template.sh

echo "== cargo test"
bash infra/moto.sh install  # the AWS adapters' tests run against moto's server
# The end-to-end tests on moto record each function's AWS operations here, for the
# permissions check below; an earlier run's records must not vouch for this one.
ops_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/tmp/aws-ops
rm -rf "$ops_dir"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"

echo "== IAM: the template grants each function what the end-to-end tests saw it do, no more"
venv=.cache/sam-venv  # made by infra/lint-template.sh above
"$venv/bin/python" infra/iam_check.py check template.yaml "$ops_dir"
"$venv/bin/python" infra/iam_check.py self-test template.yaml "$ops_dir"
# One closing line over every test binary (cargo's own last line is a doc-test run,
# often of zero tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
