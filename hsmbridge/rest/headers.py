"""The Key Protect request headers (§1.2): names, and what each one means to the facade.

- ``bluemix-instance`` scopes every resource, so it is required on every endpoint. The spec
  documents no error for a missing one; we answer 400 ``MISSING_FIELD_ERR`` with
  ``target {type: "param", name: "bluemix-instance"}`` (headers are parameters in the API
  reference; ``param`` is the closest of Key Protect's target types) and 400 ``INVALID_PARAM_ERR``
  for a value that cannot be an instance ID. Not 401: the credentials may be fine, and the Go SDK
  treats 401 as "re-authenticate", which cannot help.
  Instance IDs are GUIDs in IBM Cloud, but a self-hosted deployment may name tenants freely, so
  any short token-like string is accepted; ``:`` and ``/`` are refused because the value becomes
  a CRN segment.
- ``correlation-id`` is echoed on responses (error texts tell users to quote it); a missing or
  unusable one can be replaced by a generated ID so logs and responses still correlate.
- ``prefer`` selects ``return=minimal`` or ``return=representation``; parsing tolerates spacing,
  case, quotes and other RFC 7240 preferences in the same header. Unknown values are ignored,
  as RFC 7240 asks, and the endpoint's default applies.
- ``x-kms-key-ring`` is optional; blank means absent.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

from hsmbridge.rest.errors import invalid_field, missing_field

AUTHORIZATION = "authorization"
BLUEMIX_INSTANCE = "bluemix-instance"
CORRELATION_ID = "correlation-id"
PREFER = "prefer"
KEY_RING = "x-kms-key-ring"
#: HEAD /keys answers the count in this response header.
KEY_TOTAL = "Key-Total"

_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
#: Visible ASCII only, so echoing it can never split or smuggle a header.
_CORRELATION_RE = re.compile(r"[\x21-\x7e]{1,128}", re.ASCII)


class Prefer(enum.StrEnum):
    MINIMAL = "minimal"
    REPRESENTATION = "representation"


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """`name` (lower case) from Starlette's case-insensitive `Headers` or from a plain dict."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def parse_prefer(value: str | None) -> Prefer | None:
    """The ``return`` preference in a ``prefer`` header, or None when absent or unknown.

    Accepts ``return=minimal``, ``Return = Representation``, ``return="minimal"`` and lists like
    ``respond-async, return=minimal; foo=bar``. The first ``return`` preference wins.
    """
    if not value:
        return None
    for preference in value.split(","):
        token = preference.split(";", 1)[0]
        name, sep, raw = token.partition("=")
        if not sep or name.strip().lower() != "return":
            continue
        choice = raw.strip().strip('"').strip().lower()
        try:
            return Prefer(choice)
        except ValueError:
            return None
    return None


def wants_representation(value: str | None, *, default: bool) -> bool:
    """Whether to send the resource back. Defaults differ by endpoint (§8.1): create and restore
    return it, DELETE and purge do not."""
    choice = parse_prefer(value)
    if choice is None:
        return default
    return choice is Prefer.REPRESENTATION


def correlation_id(headers: Mapping[str, str], *, generate: Callable[[], str] | None = None) -> str | None:
    """The client's ``correlation-id`` if it is safe to echo; else `generate()` (if given) or None."""
    value = get_header(headers, CORRELATION_ID)
    if value is not None and _CORRELATION_RE.fullmatch(value):
        return value
    return generate() if generate is not None else None


def response_headers(
    headers: Mapping[str, str], *, generate: Callable[[], str] | None = None
) -> dict[str, str]:
    """Headers every response carries: the echoed (or generated) ``correlation-id``."""
    value = correlation_id(headers, generate=generate)
    return {CORRELATION_ID: value} if value is not None else {}


def key_ring(headers: Mapping[str, str]) -> str | None:
    """``x-kms-key-ring``, stripped; blank is the same as absent. Existence is the service's call
    (an unknown ring is 404 ``KEY_RING_NOT_FOUND_ERR`` there)."""
    value = get_header(headers, KEY_RING)
    if value is None:
        return None
    value = value.strip()
    return value or None


def require_instance(headers: Mapping[str, str]) -> str:
    """The tenant: ``bluemix-instance``, required (see the module docstring for the statuses)."""
    value = get_header(headers, BLUEMIX_INSTANCE)
    if value is None or not value.strip():
        raise missing_field(BLUEMIX_INSTANCE, target_type="param")
    value = value.strip()
    if not _INSTANCE_RE.fullmatch(value):
        raise invalid_field(BLUEMIX_INSTANCE, "a service instance ID (a GUID)", target_type="param")
    return value
