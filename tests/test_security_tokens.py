"""Static API tokens: digests only in config, constant-time lookup, generic failures, the CLI."""

from __future__ import annotations

import hashlib
import tomllib

import pytest
from pydantic import ValidationError

from hsmbridge.errors import Unauthenticated
from hsmbridge.security import tokens
from hsmbridge.security.principals import (
    Identity,
    Role,
    identity_of,
    parse_roles,
    to_principal,
)
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens

TOKEN = "hsmb_test-token-not-a-real-secret-0123456789"


def entry(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
        "principal": "svc-payments",
        "instances": ["tenant-a"],
        "roles": ["Writer"],
    }
    base.update(overrides)
    return base


def test_a_configured_digest_authenticates_its_token() -> None:
    table = StaticTokens([StaticTokenConfig.model_validate(entry())])
    identity = table.authenticate(TOKEN)
    assert identity == Identity(
        "svc-payments", instances=frozenset({"tenant-a"}), roles=frozenset({"Writer"}), method="token"
    )


def test_digest_is_accepted_in_upper_case_and_with_spaces() -> None:
    digest = " " + hashlib.sha256(TOKEN.encode()).hexdigest().upper() + " "
    table = StaticTokens([StaticTokenConfig.model_validate(entry(token_sha256=digest))])
    assert table.lookup(TOKEN) is not None


@pytest.mark.parametrize("presented", ["", "hsmb_other", TOKEN + " ", TOKEN[:-1], "x" * 9000])
def test_anything_else_is_unauthenticated_with_a_generic_message(presented: str) -> None:
    table = StaticTokens([StaticTokenConfig.model_validate(entry())])
    with pytest.raises(Unauthenticated) as info:
        table.authenticate(presented)
    assert info.value.message == tokens.UNAUTHENTICATED_MSG
    if presented:
        assert presented not in str(info.value) and presented not in repr(info.value)


@pytest.mark.parametrize("field", ["token", "secret", "value"])
def test_a_token_in_the_clear_is_refused_and_not_echoed(field: str) -> None:
    data = entry()
    del data["token_sha256"]
    data[field] = TOKEN
    with pytest.raises(ValidationError) as info:
        StaticTokenConfig.model_validate(data)
    assert "token_sha256" in str(info.value)
    assert TOKEN not in str(info.value)


def test_a_token_pasted_into_the_digest_field_is_refused_and_not_echoed() -> None:
    with pytest.raises(ValidationError) as info:
        StaticTokenConfig.model_validate(entry(token_sha256=TOKEN))
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"roles": ["Writter"]},
        {"roles": ["Admin"]},
        {"instances": []},
        {"instances": [" "]},
        {"instances": "tenant-a"},  # a bare string other than "*" is a likely typo for a list
        {"principal": ""},
        {"extra": 1},
    ],
)
def test_bad_entries_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StaticTokenConfig.model_validate(entry(**overrides))


def test_duplicate_digests_are_refused() -> None:
    e = StaticTokenConfig.model_validate(entry())
    with pytest.raises(ValueError, match="same token_sha256"):
        StaticTokens([e, e])


def test_star_means_any_instance_and_key_purge_is_kept() -> None:
    e = StaticTokenConfig.model_validate(entry(instances="*", roles=["manager", "KeyPurge"], key_purge=False))
    identity = e.identity()
    assert identity.instances is None
    assert identity.roles == {"Manager"}
    assert identity.key_purge
    assert identity.top_role is Role.MANAGER


def test_lookup_compares_against_every_entry() -> None:
    """No early exit: a match on the first entry still visits the rest (constant time in which
    entry matched). Observed through compare_digest calls."""
    others = [
        StaticTokenConfig.model_validate(
            entry(token_sha256=hashlib.sha256(f"t{i}".encode()).hexdigest(), principal=f"p{i}")
        )
        for i in range(4)
    ]
    table = StaticTokens([StaticTokenConfig.model_validate(entry()), *others])
    calls = []
    real = tokens.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    tokens.hmac.compare_digest = counting  # type: ignore[assignment]
    try:
        assert table.lookup(TOKEN) is not None
    finally:
        tokens.hmac.compare_digest = real  # type: ignore[assignment]
    assert len(calls) == 5


def test_generated_tokens_are_random_prefixed_and_hash_to_their_digest() -> None:
    a, da = tokens.generate_token()
    b, db = tokens.generate_token()
    assert a != b and da != db
    assert a.startswith(tokens.TOKEN_PREFIX) and len(a) >= 40
    assert tokens.hash_token(a) == da


def test_cli_prints_a_token_and_a_valid_entry_holding_only_its_digest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--principal", "ops", "--instance", "t1", "--instance", "t2", "--role", "Reader"]
    assert tokens.main(argv) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith(tokens.TOKEN_PREFIX)
    assert token not in err
    config = tomllib.loads(err.split("configuration entry (holds only the digest):", 1)[1])
    (e,) = config["security"]["tokens"]
    assert e["token_sha256"] == tokens.hash_token(token)
    table = StaticTokens([StaticTokenConfig.model_validate(e)])
    assert table.authenticate(token).instances == {"t1", "t2"}


def test_cli_refuses_unknown_roles() -> None:
    with pytest.raises(SystemExit):
        tokens.main(["--principal", "ops", "--instance", "*", "--role", "Owner"])


# The principal encoding every authenticator relies on.


@pytest.mark.parametrize(
    "identity",
    [
        Identity("a", instances=frozenset({"t1", "t2"}), roles=frozenset({"Reader"})),
        Identity("b", instances=None, roles=frozenset({"Manager", "Writer"}), key_purge=True),
        Identity("c", instances=frozenset(), roles=frozenset()),
        Identity("d", instances=frozenset({"with:colon"}), roles=frozenset({"ReaderPlus"})),
    ],
)
def test_identity_round_trips_through_principal(identity: Identity) -> None:
    assert identity_of(to_principal(identity)) == identity


def test_a_bare_principal_may_use_no_instance() -> None:
    from hsmbridge.core.principal import Principal

    identity = identity_of(Principal("dev"))
    assert identity.instances == frozenset()
    assert not identity.may_use("anything")


def test_role_parsing_accepts_ibm_spellings_and_ignores_foreign_groups() -> None:
    roles, purge = parse_roles(
        ["crn:v1:bluemix:public:iam::::serviceRole:Writer", "readerplus", "Administrators", "KeyPurge"],
        strict=False,
    )
    assert roles == {"Writer", "ReaderPlus"} and purge
    with pytest.raises(ValueError):
        parse_roles(["Administrators"], strict=True)


def test_identity_refuses_non_canonical_roles() -> None:
    with pytest.raises(ValueError):
        Identity("x", roles=frozenset({"writer"}))
    with pytest.raises(ValueError):
        Identity("", roles=frozenset())
