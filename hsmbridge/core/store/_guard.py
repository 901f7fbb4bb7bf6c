"""`guarded`: the one place where a store operation's driver errors become domain errors.

Its own module so that the modules a store is assembled from (_sql.py and the record mixins such
as push_records.py) can all use it without importing each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="_MapsErrors")


class _MapsErrors(Protocol):
    @staticmethod
    def _map_error(exc: Exception, what: str, /) -> Exception | None: ...


def guarded(fn: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Turn any driver error into the engine's domain error, so no driver type reaches a caller.

    The mapping itself is the engine's (`_map_error`): which driver errors mean "the store is
    unavailable", "you lost a race" or "a bug". Domain errors raised inside pass through.
    """
    what = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            mapped = self._map_error(exc, what)
            if mapped is None:
                raise
            raise mapped from exc

    return wrapper
