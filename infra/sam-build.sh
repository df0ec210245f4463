#!/usr/bin/env bash
# Builds the four Lambda functions as `sam deploy` needs them: `sam build`, whose
# rust-cargolambda method runs cargo-lambda (cross-compiling to arm64 with zig) for each
# function. cargo-lambda and zig come from PyPI into the same venv as the SAM CLI, and the
# Rust target through rustup, so a fresh machine needs only Python and rustup.
# Usage: infra/sam-build.sh [extra sam build options]; the result is in .aws-sam/build/.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LAMBDA_VERSION=1.9.2
venv=.cache/sam-venv

bash infra/lint-template.sh >/dev/null # makes the venv with the pinned SAM CLI
if ! "$venv/bin/cargo-lambda" --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION"; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION"
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

export PATH="$PWD/$venv/bin:$PATH" SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
sam build --beta-features "$@"

# What Lambda will run: one arm64 executable named bootstrap per function.
status=0
for fn in SchedulerFunction FetcherFunction RestorerFunction ApiFunction; do
  bin=.aws-sam/build/$fn/bootstrap
  if [ ! -x "$bin" ] || ! head -c 20 "$bin" | od -An -tx1 | tr -d ' \n' | grep -q '^7f454c46.\{28\}b700'; then
    echo "sam-build: $bin is missing or not an arm64 executable" >&2
    status=1
  else
    echo "sam-build: $fn: $(du -h "$bin" | cut -f1) arm64 bootstrap"
  fi
done
exit $status
