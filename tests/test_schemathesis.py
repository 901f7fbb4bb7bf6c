"""A bounded, seeded schemathesis run against a live daemon's REST facade (issue 15, fault
suite): every operation of ``/openapi.json`` is called with generated valid and invalid input,
and any 5xx, any response that does not match the documented schema, status or content type
fails the test. Examples per operation are capped and the generation is derandomised (seeded), so
the run is repeatable and bounded (about a minute on two cores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from daemon import DEV_TOKEN, Daemon
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.softhsm

INSTANCE = "schemathesis-instance"
EXAMPLES = 5
#: "any 5xx or schema violation": the status, content type, headers and body must be documented
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HEADERS = {"authorization": f"Bearer {DEV_TOKEN}", "bluemix-instance": INSTANCE}


@pytest.fixture(scope="module")
def facade(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("schemathesis")
    daemon = Daemon(softhsm_token, workdir)
    daemon.start(timeout=120)
    try:
        yield daemon.rest_url
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def api(facade: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{facade}/openapi.json")


def describe(exc: BaseException) -> str:
    """The failure and what it groups (hypothesis reports a flaky failure as a group)."""
    parts = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(describe(inner))
    return "\n".join(parts)


def test_the_facade_answers_every_generated_request_within_its_schema(api: schemathesis.BaseSchema) -> None:
    """One hypothesis run per operation (schemathesis' pytest plugin needs an older pytest)."""
    failures: dict[str, str] = {}
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=HEADERS, checks=CHECKS, timeout=120)

        try:
            call()
        except (
            Exception,
            BaseExceptionGroup,
        ) as exc:  # keep going: one report for every operation that failed
            failures[operation.label] = describe(exc)[:4000]
    assert operations > 30
    assert not failures, f"{sorted(failures)}\n\n" + "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
