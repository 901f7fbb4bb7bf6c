"""Persistence: the `Store` contract (base.py), implemented once (_sql.py) for two engines.

sqlite.py and postgres.py hold only what differs between the engines (connections and pool,
``BEGIN IMMEDIATE`` versus per-tenant advisory and row locks, placeholders, error mapping); every
store operation is written once in _sql.py, and the same migration files serve both (migrate.py).
`open_store` picks the engine from a URL or path; engines are imported only when opened.
"""

from hsmbridge.core.store.factory import StoreLocation, open_store, parse_store_url

__all__ = ["StoreLocation", "open_store", "parse_store_url"]
