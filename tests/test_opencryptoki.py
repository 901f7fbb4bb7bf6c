"""hsmbridge on a second PKCS#11 implementation: openCryptoki 3.8.1's software token (Debian
bookworm's `opencryptoki`, through its `pkcsslotd`).

What was measured here decides what these tests can claim. openCryptoki 3.8.1's software token
lists neither CKM_AES_GCM nor any AES key wrap mechanism (`pkcsconf -m -c 3`; the soft token
gained GCM in 3.18 and CKM_AES_KEY_WRAP_PAD in 3.25), and hsmbridge requires both. So the
envelope, RFC 5649, import and rotation paths cannot run on it; what must hold is that the
capability probe reports the token truthfully (each mechanism judged on its own, not through
GCM), and that the backend and the CLI refuse it at start-up with an error that names what is
missing, instead of failing later on a request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsmbridge.errors import Unsupported
from hsmbridge.hsm import capabilities as capability_probe
from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings
from hsmbridge.hsm.library import Pkcs11Library
from hsmbridge.hsm.pool import SessionPool

pytest_plugins = ("opencryptoki_fixtures",)

KEK_LABEL = "hsmbridge-master-kek"

#: The probe's real output on openCryptoki 3.8.1 (docs/operating.md's vendor matrix row).
MEASURED = {
    "aes_gcm": False,
    "aes_key_wrap": False,
    "aes_key_wrap_pad": False,
    "rsa_oaep_sha1": True,
    "rsa_oaep_sha256": True,  # natively, unlike SoftHSM2 2.6.1
    "rsa_x509": True,
    "trusted_kek": False,
    "oaep_sha256_fallback": True,
    "gcm_length_query": True,  # not asked: the token has no GCM
    "wrap_length_query": True,  # not asked: no AES key wrap
    "token_data_objects": True,
    "aes_key_wrap_kwp": False,
    "long_secrets": False,  # no RFC 5649 to unwrap with
}


@pytest.fixture(scope="module")
def ock_settings(opencryptoki_token: dict[str, str | int]) -> Pkcs11Settings:
    return Pkcs11Settings(
        module=str(opencryptoki_token["module"]),
        pin=str(opencryptoki_token["pin"]),
        token_label=str(opencryptoki_token["label"]),
        kek_label=KEK_LABEL,
        pool_size=2,
        oaep_sha256_fallback=True,
    )


@pytest.fixture(scope="module")
def ock_pool(ock_settings: Pkcs11Settings) -> Iterator[SessionPool]:
    """A session pool that holds the token login for the module (opened before any backend)."""
    pool = SessionPool(
        Pkcs11Library.load(ock_settings.module),
        token_label=ock_settings.token_label,
        slot_id=None,
        pin=ock_settings.pin,
        size=2,
        checkout_timeout=5.0,
    )
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def refusal(ock_pool: SessionPool, ock_settings: Pkcs11Settings) -> Unsupported:
    """What `hsmbridge init` + start-up does on this token: create the KEK, probe, refuse."""
    with pytest.raises(Unsupported) as caught:
        Pkcs11Backend(ock_settings, create_kek=True)
    return caught.value


def test_the_backend_refuses_the_token_at_start_up_naming_what_is_missing(refusal: Unsupported) -> None:
    assert refusal.message == (
        "the token cannot do AES-GCM, AES key wrap with padding, which hsmbridge requires"
    )


def test_the_probe_reports_each_mechanism_as_the_token_really_does_it(
    refusal: Unsupported, ock_pool: SessionPool, ock_settings: Pkcs11Settings
) -> None:
    """OAEP with SHA-1 and SHA-256 and raw RSA work on openCryptoki; the probe must say so even
    though the token has no GCM to check the unwrapped key with (it reads the throw-away key's
    value instead)."""
    from pkcs11 import ObjectClass

    with ock_pool.checkout() as pooled:
        kek = pooled.session.get_key(object_class=ObjectClass.SECRET_KEY, label=KEK_LABEL)
        library = Pkcs11Library.load(ock_settings.module)
        caps, _ = capability_probe.probe(pooled.session, kek, oaep_sha256_fallback=True, sized=library.sized)
    assert caps.as_dict() == MEASURED


def test_the_library_is_initialised_with_os_locking(
    refusal: Unsupported, ock_settings: Pkcs11Settings
) -> None:
    library = Pkcs11Library.load(ock_settings.module)
    assert library.is_initialized_by_us()
    assert library.info["manufacturer"] == "IBM" and library.info["library_version"] == "3.8"


def test_hsm_info_on_the_token_exits_with_the_reason_and_no_traceback(
    refusal: Unsupported, opencryptoki_token: dict[str, str | int], tmp_path: Path
) -> None:
    """What an operator pointing hsmbridge at this token sees (`hsmbridge hsm-info`)."""
    config = tmp_path / "hsmbridge.toml"
    config.write_text(
        "[hsm]\n"
        f'module = "{opencryptoki_token["module"]}"\n'
        f'token_label = "{opencryptoki_token["label"]}"\n'
        'pin_file = ""\nsofthsm_dir = ""\n'
    )
    env = {**os.environ, "HSMBRIDGE_HSM_PIN": str(opencryptoki_token["pin"])}
    result = subprocess.run(
        [sys.executable, "-m", "hsmbridge.cli", "--config", str(config), "hsm-info"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "the token cannot do AES-GCM, AES key wrap with padding" in result.stderr
    assert "Traceback" not in result.stderr
    assert str(opencryptoki_token["pin"]) not in result.stderr + result.stdout
