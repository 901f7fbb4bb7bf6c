"""The limits, measured in-process with python-pkcs11 on the benchmark's own token (run as a child
process by benchmarks.run so the orchestrator never loads PKCS#11):

    python -m benchmarks.raw gcm   --seconds 2 --runs 3      AES-256-GCM encrypt and decrypt,
                                                            32 B + 16 B AAD, one thread
    python -m benchmarks.raw rsa   --seconds 3 --runs 1      RSA-4096 OAEP(SHA-1) unwrap of a
                                                            32-byte AES key + destroy, one thread
    python -m benchmarks.raw count                          token objects on the token, and how
                                                            carry a pool label (pooled or taken by a token)

Prints one JSON object: {"encrypt": [ops/s per run], ...}. The library is initialised with OS
locking exactly as the daemon does (hsmbridge.hsm.library).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hsmbridge import softhsm


def measure(fn: Callable[[], object], seconds: float, batch: int = 100) -> float:
    for _ in range(min(batch, 50)):
        fn()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("gcm", "rsa", "count"))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--token", default=os.environ.get("HSMBRIDGE_HSM__TOKEN_LABEL", "bench"))
    args = parser.parse_args()

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass

    from hsmbridge.hsm.library import Pkcs11Library

    module = softhsm.find_module()
    assert module, "SoftHSM2 is not installed"
    pin = Path(os.environ["HSMBRIDGE_HSM__PIN_FILE"]).read_text().strip()
    import pkcs11

    lib = Pkcs11Library.load(module)
    for attempt in range(10):
        # SoftHSM2 now and then answers CKR_GENERAL_ERROR when two processes read the token
        # directory at the same moment (two of these start together): try again
        try:
            token = lib.lib.get_token(token_label=args.token)
            break
        except pkcs11.GeneralError:
            if attempt == 9:
                raise
            time.sleep(0.2)
    results: dict[str, list[float]] = {}
    with token.open(rw=True, user_pin=pin) as session:
        if args.what == "count":
            labels = [str(o[Attribute.LABEL]) for o in session.get_objects({Attribute.TOKEN: True})]
            print(
                json.dumps(
                    {"token_objects": len(labels), "pool_labelled": sum("import-pool-" in x for x in labels)}
                )
            )
            return 0
        if args.what == "gcm":
            key = session.generate_key(
                KeyType.AES,
                256,
                store=False,
                template={Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.SENSITIVE: True},
            )
            iv, aad, data = os.urandom(12), os.urandom(16), os.urandom(32)
            params = GCMParams(iv, aad)
            ciphertext = key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=params)

            def encrypt() -> object:
                return key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad))

            def decrypt() -> object:
                return key.decrypt(
                    ciphertext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad)
                )

            for _ in range(args.runs):
                results.setdefault("encrypt", []).append(measure(encrypt, args.seconds))
                results.setdefault("decrypt", []).append(measure(decrypt, args.seconds))
            key.destroy()
        else:
            public, private = session.generate_keypair(
                KeyType.RSA,
                4096,
                store=False,
                public_template={Attribute.ENCRYPT: True, Attribute.WRAP: True},
                private_template={
                    Attribute.UNWRAP: True,
                    Attribute.DECRYPT: False,
                    Attribute.SENSITIVE: True,
                },
            )
            from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

            numbers = RSAPublicNumbers(
                int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public[Attribute.MODULUS], "big"),
            )
            pub = serialization.load_der_public_key(
                numbers.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
            wrapped = pub.encrypt(os.urandom(32), oaep)  # type: ignore[union-attr]

            def unwrap() -> object:
                key = private.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    wrapped,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(Mechanism.SHA_1, MGF.SHA1, None),
                    store=False,
                    template={Attribute.TOKEN: False, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
                )
                key.destroy()
                return key

            for _ in range(args.runs):
                results.setdefault("rsa4096_unwrap", []).append(measure(unwrap, args.seconds, batch=10))
            private.destroy()
            public.destroy()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
