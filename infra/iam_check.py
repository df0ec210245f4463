"""Proves the template's IAM grants from what the code does on AWS.

moto enforces no IAM, so a permission the code needs but the template lacks shows up only
on a real deployment, as a 403 (or, for a HEAD of a missing S3 key without s3:ListBucket,
as a 403 where the code expects 404). The end-to-end tests on moto
(`shared/lambda-wiring/tests/e2e_moto.rs`) record every AWS operation each function
performs and on which resource; this script maps each operation to the IAM actions it
needs (with what SSE-KMS on the bucket and a HEAD imply) and checks them against the
template as CloudFormation will see it (transformed by the SAM translator):

- every action a function needs is granted to its role on that resource;
- every action granted to a role (in its own policies) is needed by some recorded
  operation: nothing much more than the code uses;
- what holds tenants' data (the vault's key, bucket and table) outlives the stack: a
  deleted or replaced stack must not take every tenant's backups with it.

Usage (with the template venv's Python, see infra/lint-template.sh):
  iam_check.py transform TEMPLATE OUT.json    write the transformed template
  iam_check.py check TEMPLATE OPS_DIR         check the recorded operations
  iam_check.py self-test TEMPLATE OPS_DIR     the check fails on a grant taken away or added
"""

import copy
import fnmatch
import glob
import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from cfnlint.decode import decode  # noqa: E402
from samtranslator.translator.transform import transform as sam_transform  # noqa: E402

FUNCTIONS = {
    "scheduler": "SchedulerFunction",
    "fetcher": "FetcherFunction",
    "restorer": "RestorerFunction",
    "api": "ApiFunction",
}

# The AWS managed policies SAM attaches (the actions that matter here).
MANAGED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream",
                                       "logs:PutLogEvents"], "Resource": "*"},
    ],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": [
        {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                       "sqs:GetQueueAttributes", "logs:CreateLogGroup",
                                       "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "*"},
    ],
}

ARN_FORMS = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:region:account:table/{}",
    "AWS::S3::Bucket": "arn:aws:s3:::{}",
    "AWS::SQS::Queue": "arn:aws:sqs:region:account:{}",
    "AWS::KMS::Key": "arn:aws:kms:region:account:key/{}",
    "AWS::Events::EventBus": "arn:aws:events:region:account:event-bus/{}",
}


SERVICE_TYPES = {
    "dynamodb": "AWS::DynamoDB::Table",
    "s3": "AWS::S3::Bucket",
    "sqs": "AWS::SQS::Queue",
    "kms": "AWS::KMS::Key",
    "events": "AWS::Events::EventBus",
}


class Failed(Exception):
    pass


def transformed(template_path):
    tpl, matches = decode(template_path)
    if matches:
        raise Failed(f"{template_path} does not parse: {matches}")
    tpl = json.loads(json.dumps(tpl, default=str))
    for res in tpl["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            # The translator wants code in S3; where it is does not change any grant.
            res["Properties"]["CodeUri"] = "s3://code/function.zip"

    class NoManagedPolicies:
        def load(self):
            return {}

    return sam_transform(tpl, {}, NoManagedPolicies())


def arn_of(template, logical):
    res = template["Resources"].get(logical)
    if res is None or res["Type"] not in ARN_FORMS:
        raise Failed(f"no ARN form for resource {logical}")
    return ARN_FORMS[res["Type"]].format(logical)


def resolve(template, expr):
    """A policy's Resource as ARN patterns (resources named by their logical id)."""
    if isinstance(expr, list):
        return [p for e in expr for p in resolve(template, e)]
    if isinstance(expr, str):
        return [expr]
    if "Fn::GetAtt" in expr:
        logical, attr = expr["Fn::GetAtt"]
        if attr != "Arn":
            raise Failed(f"Resource uses {logical}.{attr}, not an ARN")
        return [arn_of(template, logical)]
    if "Fn::Sub" in expr:
        text = expr["Fn::Sub"]
        if isinstance(text, list):
            text = text[0]
        out = text
        for logical in template["Resources"]:
            if "${%s.Arn}" % logical in out:
                out = out.replace("${%s.Arn}" % logical, arn_of(template, logical))
        if "${" in out:
            raise Failed(f"cannot resolve {text}")
        return [out]
    raise Failed(f"cannot resolve Resource {expr}")


def statements_of(template, role):
    """The Allow statements of a function's role: its own, and SAM's managed ones."""
    props = template["Resources"][FUNCTIONS[role] + "Role"]["Properties"]
    own, managed = [], []
    for pol in props.get("Policies", []):
        for st in pol["PolicyDocument"]["Statement"]:
            if st.get("Effect") != "Allow":
                continue
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            own.append((actions, resolve(template, st["Resource"])))
    for arn in props.get("ManagedPolicyArns", []):
        if arn not in MANAGED:
            raise Failed(f"{role}: managed policy {arn} is not known to this check")
        for st in MANAGED[arn]:
            managed.append((st["Action"], [st["Resource"]]))
    return own, managed


def sse_kms_key(template):
    """The logical id of the key the vault bucket encrypts with by default, if any."""
    enc = template["Resources"]["VaultBucket"]["Properties"].get("BucketEncryption", {})
    for rule in enc.get("ServerSideEncryptionConfiguration", []):
        d = rule.get("ServerSideEncryptionByDefault", {})
        if d.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse"):
            key = d.get("KMSMasterKeyID")
            if isinstance(key, dict) and "Fn::GetAtt" in key:
                return key["Fn::GetAtt"][0]
            raise Failed(f"the bucket's key {key} is not a key of the template")
    return None


S3_OBJECT = {
    "GetObject": ["s3:GetObject"],
    "HeadObject": ["s3:GetObject"],
    "PutObject": ["s3:PutObject"],
    "CreateMultipartUpload": ["s3:PutObject"],
    "UploadPart": ["s3:PutObject"],
    "CompleteMultipartUpload": ["s3:PutObject"],
    "AbortMultipartUpload": ["s3:AbortMultipartUpload"],
    "DeleteObject": ["s3:DeleteObject"],
    # Recorded for an upload that sets tags (x-amz-tagging).
    "PutObjectTagging": ["s3:PutObjectTagging"],
}
S3_BUCKET = {
    "ListObjectsV2": ["s3:ListBucket"],
    "HeadBucket": ["s3:ListBucket"],
    "ListMultipartUploads": ["s3:ListBucketMultipartUploads"],
}
# With SSE-KMS by default, S3 asks KMS on the caller's behalf.
KMS_FOR = {
    "GetObject": ["kms:Decrypt"],
    "PutObject": ["kms:GenerateDataKey"],
    "CreateMultipartUpload": ["kms:GenerateDataKey", "kms:Decrypt"],
    "UploadPart": ["kms:GenerateDataKey", "kms:Decrypt"],
    "CompleteMultipartUpload": ["kms:Decrypt"],
}
SQS = {
    "SendMessage": "sqs:SendMessage",
    "SendMessageBatch": "sqs:SendMessage",
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessage": "sqs:DeleteMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibility": "sqs:ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "GetQueueAttributes": "sqs:GetQueueAttributes",
    "GetQueueUrl": "sqs:GetQueueUrl",
}
DYNAMO_ITEM = {"Put": "PutItem", "Delete": "DeleteItem", "Update": "UpdateItem",
               "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def needs_of(template, names, service, op, resource):
    """The (action, resource ARN) pairs one recorded operation needs."""
    # Resources of different kinds may share a name (the tests name a stack's table,
    # bucket and bus alike): look the name up among the resources of the service's kind.
    kind = SERVICE_TYPES.get(service)
    logical_of = {}
    for logical, physical in names.items():
        res = template["Resources"].get(logical)
        if physical and res is not None and res["Type"] == kind:
            logical_of[physical] = logical
            logical_of[physical.rsplit("/", 1)[-1]] = logical  # a queue URL's name

    def arn(physical):
        logical = logical_of.get(physical) or logical_of.get(physical.rsplit("/", 1)[-1])
        if logical is None:
            raise Failed(f"{service}:{op} on {physical!r}, a resource of no known name")
        return arn_of(template, logical)

    if service == "dynamodb":
        if ":" in op:
            op = DYNAMO_ITEM[op.split(":", 1)[1]]
        return [(f"dynamodb:{op}", arn(resource))]
    if service == "s3":
        bucket, _, key = resource.partition("/")
        bucket_arn = arn(bucket)
        out = []
        if op in S3_OBJECT:
            out += [(a, f"{bucket_arn}/{key}") for a in S3_OBJECT[op]]
            if op == "HeadObject":
                # Without it, a HEAD of a missing key answers 403, not 404.
                out.append(("s3:ListBucket", bucket_arn))
            key_logical = sse_kms_key(template)
            if key_logical:
                out += [(a, arn_of(template, key_logical)) for a in KMS_FOR.get(op, [])]
        elif op in S3_BUCKET:
            out += [(a, bucket_arn) for a in S3_BUCKET[op]]
        else:
            raise Failed(f"s3:{op} is not known to this check")
        return out
    if service == "sqs":
        if op not in SQS:
            raise Failed(f"sqs:{op} is not known to this check")
        return [(SQS[op], arn(resource))]
    if service == "kms":
        return [(f"kms:{op}", arn(resource))]
    if service == "events":
        return [(f"events:{op}", arn(resource))]
    raise Failed(f"{service}:{op}: service not known to this check")


# Grants for paths the end-to-end tests do not drive, each with the reason it is needed.
# Keep it short: a grant here is one no test proves.
UNPROVEN = {
    ("restorer", "s3:AbortMultipartUpload"):
        "aborts the upload of an export whose source failed midway",
}


def allows(statements, action, arn):
    for actions, resources in statements:
        if any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions) and any(
            fnmatch.fnmatchcase(arn, r) for r in resources
        ):
            return True
    return False


def load_ops(ops_dir):
    files = sorted(glob.glob(os.path.join(ops_dir, "*.json")))
    if not files:
        raise Failed(f"no recorded operations in {ops_dir}: run the end-to-end tests first")
    recorded = []
    for f in files:
        with open(f) as fh:
            doc = json.load(fh)
        for role, service, op, resource in doc["ops"]:
            recorded.append((doc["names"], role, service, op, resource))
    return recorded


def check(template, recorded):
    """Returns the problems found (empty when the grants are exactly what is used)."""
    problems = []
    needed = {role: set() for role in FUNCTIONS}
    for names, role, service, op, resource in recorded:
        for action, arn in needs_of(template, names, service, op, resource):
            needed[role].add((action, arn, f"{service}:{op}"))
    for role in FUNCTIONS:
        own, managed = statements_of(template, role)
        for action, arn, why in sorted(needed[role]):
            if not allows(own + managed, action, arn):
                problems.append(f"{role}: needs {action} on {arn} (for {why}); not granted")
        for actions, resources in own:
            for a in actions:
                if (role, a) in UNPROVEN:
                    continue
                for r in resources:
                    if not any(fnmatch.fnmatchcase(act.lower(), a.lower())
                               and fnmatch.fnmatchcase(arn, r)
                               for act, arn, _ in needed[role]):
                        problems.append(f"{role}: is granted {a} on {r}, which it never uses")
    return problems


# Everything a tenant's backups need to be read again: the bucket with the packs, the table
# with the snapshots, and the root key that wraps every tenant's key.
KEEPERS = ["VaultKey", "VaultBucket", "CatalogTable"]


def unretained(template):
    """The data-holding resources that a stack deletion or replacement would destroy."""
    out = []
    for logical in KEEPERS:
        res = template["Resources"].get(logical)
        if res is None:
            out.append(f"{logical}: missing from the template")
            continue
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            if res.get(policy) != "Retain":
                out.append(f"{logical}: {policy} is {res.get(policy)!r}, not 'Retain' "
                           "(deleting or replacing the stack would lose every tenant's data)")
    return out


def self_test(template, recorded):
    """The check must fail when a needed grant is taken away or an unused one added."""
    if check(template, recorded) or unretained(template):
        raise Failed("self-test needs a template that passes")
    for logical in KEEPERS:
        t = copy.deepcopy(template)
        del t["Resources"][logical]["DeletionPolicy"]
        if not unretained(t):
            raise Failed(f"{logical} without DeletionPolicy went unnoticed")
    for role, logical in FUNCTIONS.items():
        policies = template["Resources"][logical + "Role"]["Properties"]["Policies"]
        first = policies[0]["PolicyDocument"]["Statement"][0]
        acts = first["Action"] if isinstance(first["Action"], list) else [first["Action"]]
        for i in range(len(acts)):
            t = copy.deepcopy(template)
            st = t["Resources"][logical + "Role"]["Properties"]["Policies"][0][
                "PolicyDocument"]["Statement"][0]
            st["Action"] = acts[:i] + acts[i + 1:] or ["s3:GetBucketTagging"]
            if not check(t, recorded):
                raise Failed(f"{role}: taking {acts[i]} away went unnoticed")
        t = copy.deepcopy(template)
        t["Resources"][logical + "Role"]["Properties"]["Policies"][0]["PolicyDocument"][
            "Statement"].append({"Effect": "Allow", "Action": "s3:DeleteBucket",
                                 "Resource": "*"})
        if not check(t, recorded):
            raise Failed(f"{role}: an unused grant went unnoticed")


def main(argv):
    if len(argv) != 4 or argv[1] not in ("transform", "check", "self-test"):
        print(__doc__, file=sys.stderr)
        return 2
    cmd, template_path, arg = argv[1:]
    try:
        template = transformed(template_path)
        if cmd == "transform":
            with open(arg, "w") as fh:
                json.dump(template, fh, indent=1)
            return 0
        recorded = load_ops(arg)
        if cmd == "self-test":
            self_test(template, recorded)
            print("iam_check: the check notices a grant taken away or added, for every function")
            return 0
        problems = unretained(template) + check(template, recorded)
    except Failed as e:
        print(f"iam_check: {e}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"iam_check: {p}", file=sys.stderr)
    if problems:
        return 1
    roles = sorted({r for _, r, *_ in recorded})
    print(f"iam_check: {len(recorded)} recorded operations of {', '.join(roles)}: "
          "every one granted, nothing granted unused")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
