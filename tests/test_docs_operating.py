"""docs/operating.md: every TOML example is valid for the daemon that will read it.

The examples are fragments of one configuration file, so each is validated by
`hsmbridge.config.Config` (every section has defaults), with the keys `Config` does not define
yet checked as tests/test_deploy.py does (`PENDING`); the `[security]` part is also validated on
its own by `SecurityConfig`, which is what an operator pasting only that part relies on.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from test_deploy import validate_config

from hsmbridge.security.config import SecurityConfig

OPERATING = Path(__file__).resolve().parent.parent / "docs" / "operating.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", OPERATING.read_text(), re.DOTALL)


def test_the_guide_has_examples_for_every_security_setting() -> None:
    joined = "\n".join(BLOCKS)
    for section in (
        "[[security.tokens]]",
        "[security.jwt]",
        "[[security.mtls.clients]]",
        "[grpc.tls]",
        "[rest.tls]",
        "[security.audit]",
        "[security.rate_limit.classes]",
    ):
        assert section in joined, section


def test_the_guide_covers_every_hsm() -> None:
    text = OPERATING.read_text()
    for heading in (
        "### SoftHSM2",
        "### Thales Luna",
        "### Entrust nShield",
        "### AWS CloudHSM",
        "### YubiHSM 2",
        "### openCryptoki",
        "### NSS softoken",
    ):
        assert heading in text, heading
    assert "hsmbridge rotate-kek --new-label" in text and "hsmbridge health --socket" in text


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_example_is_valid_configuration(block: str) -> None:
    data = tomllib.loads(block)
    validate_config(data)
    if "security" in data:
        SecurityConfig.model_validate(data["security"])


def _matrix() -> dict[str, dict[str, bool]]:
    """The vendor matrix: implementation (first word) → capability → yes/no."""
    text = OPERATING.read_text()
    table = text[text.index("### Vendor matrix (measured)") :].split("\n\n")[2].splitlines()
    names = [cell.strip().strip("`") for cell in table[0].strip("|").split("|")][1:-1]
    rows = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].split()[0]] = {n: v.startswith("yes") for n, v in zip(names, cells[1:-1], strict=True)}
    return rows


def test_the_vendor_matrix_is_the_probes_measured_output() -> None:
    """docs/operating.md says its rows are what the tests assert: check it, column by column."""
    from test_hsm_capabilities import MEASURED
    from test_opencryptoki import MEASURED as OPENCRYPTOKI

    matrix = _matrix()
    for row, measured in (
        ("SoftHSM2", MEASURED["softhsm2"]),
        ("NSS", MEASURED["nss"]),
        ("openCryptoki", OPENCRYPTOKI),
    ):
        expected = {name: value for name, value in measured.items() if name != "oaep_sha256_fallback"}
        assert matrix[row] == expected, row
