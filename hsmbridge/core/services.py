"""The service layer as one object: what the CLI builds once and every adapter receives."""

from __future__ import annotations

from dataclasses import dataclass

from hsmbridge.core.backend import CryptoBackend
from hsmbridge.core.check_values import CheckValues
from hsmbridge.core.clock import Clock, SystemClock
from hsmbridge.core.envelopes import BatchEnvelopeService, EnvelopeService
from hsmbridge.core.external_keys import ExternalKeyService
from hsmbridge.core.import_tokens import ImportTokenService
from hsmbridge.core.key_rings import KeyRingService
from hsmbridge.core.keys import KeyService
from hsmbridge.core.policies import InstancePolicyService, KeyPolicyService, check_create_time_rotation
from hsmbridge.core.registrations import RegistrationService
from hsmbridge.core.sealing import Sealer
from hsmbridge.core.store.base import Store


@dataclass
class Services:
    store: Store
    backend: CryptoBackend
    clock: Clock
    keys: KeyService
    envelopes: EnvelopeService
    import_tokens: ImportTokenService
    key_policies: KeyPolicyService
    instance_policies: InstancePolicyService
    registrations: RegistrationService
    key_rings: KeyRingService

    def __post_init__(self) -> None:
        self.batches = BatchEnvelopeService(self.keys, self.backend)
        self.sealer = Sealer(self.keys, self.envelopes)
        self.external_keys = ExternalKeyService(
            self.store, self.keys, self.backend, self.clock, self.import_tokens, self.sealer
        )
        self.check_values = CheckValues(self.backend)

    @classmethod
    def build(cls, store: Store, backend: CryptoBackend, clock: Clock | None = None) -> Services:
        clock = clock or SystemClock()
        import_tokens = ImportTokenService(store, backend, clock)
        keys = KeyService(store, backend, clock, import_tokens)
        instance_policies = InstancePolicyService(store, clock)
        registrations = RegistrationService(store, keys, clock)
        # Instance policies shape (or refuse) every new key; registrations guard every delete.
        keys.admission_rules.append(check_create_time_rotation)
        keys.admission_rules.append(instance_policies.admit)
        keys.material_rules.append(
            lambda ctx, secure: instance_policies.require_secure_import(ctx, secure=secure)
        )
        keys.deletion_guards.append(registrations.guard)
        return cls(
            store,
            backend,
            clock,
            keys,
            EnvelopeService(keys, backend),
            import_tokens,
            KeyPolicyService(store, keys, clock),
            instance_policies,
            registrations,
            KeyRingService(store, clock),
        )

    def close(self) -> None:
        self.backend.close()
        self.store.close()
