"""Persistence: the `Store` contract (base.py) and its SQLite and PostgreSQL backends.

`open_store` picks the backend from a URL or path; backends are imported only when opened.
"""

from hsmbridge.core.store.factory import StoreLocation, open_store, parse_store_url

__all__ = ["StoreLocation", "open_store", "parse_store_url"]
