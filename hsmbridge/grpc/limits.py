"""gRPC message size limits, shared by the server and the project's client.

Largest request or response message, either way: a full batch (10,000 items of the largest
envelope, plus room for key ids and AAD) fits; grpc's own defaults (4 MiB receive, unlimited
send) refused most full batches on the way in and bounded nothing on the way out.
"""

from __future__ import annotations

from hsmbridge.core.envelope import MAX_ENVELOPE_SIZE

MAX_MESSAGE_BYTES = 10_000 * (MAX_ENVELOPE_SIZE + 2048)
MESSAGE_SIZE_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
