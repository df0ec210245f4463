#!/usr/bin/env bash
# Checks the SAM template offline: cfn-lint, then `sam validate --lint`. Both come from
# PyPI into a venv under .cache/ (made once, reused), so a fresh machine needs only Python.
set -euo pipefail
cd "$(dirname "$0")/.."

CFN_LINT_VERSION=1.58.0
SAM_CLI_VERSION=1.170.0
venv=.cache/sam-venv

if ! "$venv/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION" ||
   ! "$venv/bin/sam" --version 2>/dev/null | grep -q "$SAM_CLI_VERSION"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "aws-sam-cli==$SAM_CLI_VERSION"
fi

export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
"$venv/bin/cfn-lint" template.yaml
# cfn-lint does not check the actions of SAM's inline policies until they are roles'
# policies: lint the template as the SAM translator hands it to CloudFormation too.
mkdir -p .cache
"$venv/bin/python" infra/iam_check.py transform template.yaml .cache/template.transformed.json
"$venv/bin/cfn-lint" .cache/template.transformed.json
"$venv/bin/sam" validate --lint --template-file template.yaml >/dev/null
echo "template.yaml: cfn-lint (as written and as transformed) and sam validate --lint passed"
