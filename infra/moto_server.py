"""moto's server for the AWS adapters' tests, started by infra/moto.sh.

Three places where moto (the pinned version) is looser than the AWS services it stands
for are brought back to what AWS documents, so that tests catch what AWS would refuse:

- Conditional writes are atomic. moto's own `moto_server` handles requests on many
  threads, and its conditional writes (S3 `If-None-Match: *`, DynamoDB condition
  expressions) check and then write without a lock, so two racing requests could both
  pass. This server handles one request at a time; connections stay concurrent and kept
  alive, only the handling of requests is serialised.
- A DynamoDB item may hold 400 KB (409,600 bytes, names and values counted). moto refuses
  items over 405,000 bytes.
- A KMS encryption context is a set of pairs: {"a": "bc"} is not {"ab": "c"}. moto
  authenticates the pairs concatenated without separators, so those two would match.
"""

import io
import sys
import threading

from moto.dynamodb.exceptions import ItemSizeTooLarge
from moto.dynamodb.models import dynamo_type
from moto.dynamodb.models.utilities import bytesize
from moto.kms import utils as kms_utils
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

DYNAMODB_MAX_ITEM_BYTES = 400 * 1024


def _size(v):
    return v.size() if type(v) is dynamo_type.DynamoType else bytesize(str(v))


def limited_setitem(self, key, value):
    current = sum(_size(k) + _size(v) for k, v in self.items() if k != key)
    if current + bytesize(key) + _size(value) > DYNAMODB_MAX_ITEM_BYTES:
        raise ItemSizeTooLarge
    dict.__setitem__(self, key, value)


def serialize_encryption_context(encryption_context):
    aad = io.BytesIO()
    for key, value in sorted(encryption_context.items()):
        for part in (key.encode("utf-8"), value.encode("utf-8")):
            aad.write(len(part).to_bytes(4, "big"))
            aad.write(part)
    return aad.getvalue()


dynamo_type.LimitedSizeDict.__setitem__ = limited_setitem
kms_utils._serialize_encryption_context = serialize_encryption_context

backend = DomainDispatcherApplication(create_backend_app)
one_at_a_time = threading.Lock()


def app(environ, start_response):
    with one_at_a_time:
        # The whole body is produced under the lock: moto does its work lazily for some
        # responses.
        return list(backend(environ, start_response))


if __name__ == "__main__":
    run_simple(
        "127.0.0.1",
        int(sys.argv[1]),
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )
