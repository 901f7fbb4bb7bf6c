"""E2 list-keys query semantics (limit, offset, state, extractable, sort, search, filter) as pure
functions over ``list[Key]``, plus the paging parameters of E12 (versions) and E39 (key rings).

Why pure functions over the tenant's keys rather than SQL: the grammars are Key Protect's, not a
database's; one implementation keeps HEAD's ``Key-Total`` and GET's list consistent; and the
5000-key search cap means the search space is small by contract. A store can pre-narrow by state,
extractable and key ring (`ListKeysQuery.states` etc.) before handing keys over.

Every parse error is a domain `InvalidInput` whose target is the query parameter
(``target.type = "param"``, code ``INVALID_PARAM_ERR``), except an over-broad search, which is
``KEY_SEARCH_TOO_BROAD`` as the API documents. Nothing else escapes the parsers (a property test
holds them to that).

Decisions where the spec is silent (each also noted where it is implemented):
- an empty parameter (``sort=``) is the same as an absent one: the Go SDK sends empty strings for
  empty option values;
- query booleans accept what Go's ``strconv.ParseBool`` accepts (Key Protect is a Go server);
- the search space is everything the other criteria select (state, extractable, key ring *and*
  filter), so a filter can also bring a search under the 5000-key cap;
- the Go SDK appends a ``,`` to every search string; one trailing comma is dropped;
- ``exact:`` compares case-insensitively like the default search; the alias *lookup* (which
  puts a hit first) is case-sensitive like alias resolution;
- a search lookup only finds keys the other criteria admit;
- sorting: missing dates sort after present ones ascending (before them descending), ties break
  by ``id`` ascending;
- filter dates compare at whole-second precision, the precision clients see in responses.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from hsmbridge.core.model import Key
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest.bodies import parse_rfc3339
from hsmbridge.rest.errors import TARGET_TYPE, invalid_param, with_kp_code

T = TypeVar("T")

MAX_LIMIT = 5000
DEFAULT_LIMIT = 200
KEY_RINGS_DEFAULT_LIMIT = 100
SEARCH_SPACE_LIMIT = 5000
MAX_SEARCH_LENGTH = 256
MAX_SORT_LENGTH = 256
MAX_FILTER_LENGTH = 512
MAX_TERMS_PER_PROPERTY = 3

#: 4 is not a state; 0 (pre-activation) is accepted and matches nothing (§4.1).
VALID_STATES: frozenset[int] = frozenset({0, 1, 2, 3, 5})
#: Destroyed keys are listed only on request.
DEFAULT_STATES: frozenset[int] = frozenset({0, 1, 2, 3})

_STATES_RE = re.compile(r"[0-9](?:,[0-9])*", re.ASCII)
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
_OPERATOR_RE = re.compile(r"(lte|lt|gte|gt):(.*)", re.ASCII | re.IGNORECASE | re.DOTALL)

#: What Go's strconv.ParseBool accepts.
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})

STATES_EXPECTATION = (
    "a list of integers from [0, 1, 2, 3, 5] delimited by commas with no whitespace or trailing commas"
)

#: Sortable fields (E2) and how to read them from the model.
SORT_FIELDS: Mapping[str, Callable[[Key], Any]] = {
    "id": lambda k: k.id,
    "state": lambda k: int(k.state),
    "extractable": lambda k: k.extractable,
    "imported": lambda k: k.imported,
    "creationDate": lambda k: k.created_at,
    "lastUpdateDate": lambda k: k.updated_at,
    "lastRotateDate": lambda k: k.last_rotated_at,
    "deletionDate": lambda k: k.deleted_at,
    "expirationDate": lambda k: k.expires_at,
}

#: Filterable date properties (E2 filter grammar).
DATE_PROPERTIES: Mapping[str, Callable[[Key], datetime | None]] = {
    "creationDate": lambda k: k.created_at,
    "deletionDate": lambda k: k.deleted_at,
    "expirationDate": lambda k: k.expires_at,
    "lastRotateDate": lambda k: k.last_rotated_at,
    "lastUpdateDate": lambda k: k.updated_at,
}

DateOperator = Literal["eq", "lt", "lte", "gt", "gte", "none"]


# --- parsed query objects ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False


DEFAULT_SORT: tuple[SortKey, ...] = (SortKey("id"),)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed ``search``: the literal term plus its options and scopes.

    `scoped` records whether a scope was given explicitly: only an unscoped search also matches a
    full key ID against ``id`` (the API's "with no options" rule).
    """

    term: str
    negate: bool = False
    exact: bool = False
    scopes: frozenset[str] = frozenset({"name", "alias"})
    scoped: bool = False

    def _hit(self, value: str) -> bool:
        folded, term = value.casefold(), self.term.casefold()
        return folded == term if self.exact else term in folded

    def matches(self, key: Key) -> bool:
        found = (
            ("name" in self.scopes and self._hit(key.name))
            or ("alias" in self.scopes and any(self._hit(alias) for alias in key.aliases))
            or (not self.scoped and self.is_key_id and key.id.casefold() == self.term.casefold())
        )
        return found != self.negate

    @property
    def is_key_id(self) -> bool:
        return _UUID_RE.fullmatch(self.term) is not None

    def lookup(self, keys: Iterable[Key]) -> Key | None:
        """The key a full key ID or an exact alias names: Key Protect returns it first."""
        if self.negate:
            return None
        for key in keys:
            if not self.scoped and self.is_key_id and key.id.casefold() == self.term.casefold():
                return key
            if "alias" in self.scopes and self.term in key.aliases:
                return key
        return None


@dataclass(frozen=True, slots=True)
class DateTerm:
    prop: str
    op: DateOperator
    value: datetime | None = None

    def matches(self, key: Key) -> bool:
        actual = DATE_PROPERTIES[self.prop](key)
        if self.op == "none":
            return actual is None
        if actual is None or self.value is None:
            return False
        seen = actual.replace(microsecond=0)  # what the client saw in a response
        match self.op:
            case "eq":
                return seen == self.value
            case "lt":
                return seen < self.value
            case "lte":
                return seen <= self.value
            case "gt":
                return seen > self.value
            case _:
                return seen >= self.value


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """A parsed ``filter``: every term must hold (terms on one property narrow each other)."""

    dates: tuple[DateTerm, ...] = ()
    states: tuple[frozenset[int], ...] = ()
    extractable: tuple[bool, ...] = ()

    def matches(self, key: Key) -> bool:
        return (
            all(int(key.state) in states for states in self.states)
            and all(key.extractable is value for value in self.extractable)
            and all(term.matches(key) for term in self.dates)
        )


@dataclass(frozen=True, slots=True)
class ListKeysQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    states: frozenset[int] = DEFAULT_STATES
    extractable: bool | None = None
    sort: tuple[SortKey, ...] = DEFAULT_SORT
    search: SearchQuery | None = None
    filter: KeyFilter | None = None


@dataclass(frozen=True, slots=True)
class KeyListing:
    """One page of keys, the number of keys the query selects, and the E2 search flag."""

    keys: list[Key]
    total: int
    incomplete_search: bool = False

    @property
    def extra_metadata(self) -> dict[str, Any]:
        """For `collections.collection(extra_metadata=...)`: ``incompleteSearch`` only when true."""
        return {"incompleteSearch": True} if self.incomplete_search else {}


@dataclass(frozen=True, slots=True)
class PageQuery:
    """E39 key rings: ``limit``, ``offset``, ``totalCount``."""

    limit: int
    offset: int = 0
    total_count: bool = False


@dataclass(frozen=True, slots=True)
class VersionsQuery:
    """E12 key versions: paging plus ``allKeyStates``."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    total_count: bool = False
    all_key_states: bool = False


# --- parameter parsers ------------------------------------------------------------------------


def _get(query: Mapping[str, str], name: str) -> str | None:
    """An empty value is an absent one (see module docstring)."""
    value = query.get(name)
    return value if value else None


def parse_int_param(
    raw: str | None, name: str, *, default: int, minimum: int, maximum: int | None = None
) -> int:
    if raw is None:
        return default
    value = int(raw) if _INT_RE.fullmatch(raw) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        expectation = (
            f"an integer between {minimum} and {maximum}"
            if maximum is not None
            else f"an integer greater than or equal to {minimum}"
        )
        raise invalid_param(name, expectation)
    return value


def parse_bool_param(raw: str | None, name: str) -> bool | None:
    """None when absent; Go's ParseBool spellings otherwise."""
    if raw is None:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise invalid_param(name, "a boolean (true or false)")


def parse_states(raw: str, name: str = "state") -> frozenset[int]:
    """``"1,2,5"`` → {1, 2, 5}; whitespace, empty items, trailing commas and 4 are errors."""
    if not _STATES_RE.fullmatch(raw):
        raise invalid_param(name, STATES_EXPECTATION)
    states = frozenset(int(item) for item in raw.split(","))
    if not states <= VALID_STATES:
        raise invalid_param(name, STATES_EXPECTATION)
    return states


def parse_sort(raw: str | None) -> tuple[SortKey, ...]:
    """``"-creationDate,id"``: comma-separated fields, ``-`` for descending, default ``id``."""
    if raw is None:
        return DEFAULT_SORT
    expectation = (
        f"at most {MAX_SORT_LENGTH} characters listing fields from [{', '.join(SORT_FIELDS)}] "
        "delimited by commas, each optionally prefixed with '-'"
    )
    if len(raw) > MAX_SORT_LENGTH:
        raise invalid_param("sort", expectation)
    keys: list[SortKey] = []
    seen: set[str] = set()
    for part in raw.split(","):
        descending = part.startswith("-")
        name = part[1:] if descending else part
        if name not in SORT_FIELDS:
            raise invalid_param("sort", expectation)
        if name not in seen:  # a repeated field cannot change the order; the first one wins
            seen.add(name)
            keys.append(SortKey(name, descending))
    return tuple(keys)


_SEARCH_PREFIXES = frozenset({"not", "escape", "exact", "alias", "name"})


def parse_search(raw: str | None) -> SearchQuery | None:
    """The E2 search grammar: ``[not:|exact:|alias:|name:]* [escape:] <term>`` in any order.

    Each prefix counts once; a repeated or unknown prefix, or anything after ``escape:``, is part
    of the literal term (so ``name:name:x`` searches names for ``name:x``).
    """
    if raw is None:
        return None
    if len(raw) > MAX_SEARCH_LENGTH:
        raise invalid_param("search", f"at most {MAX_SEARCH_LENGTH} characters")
    text = raw[:-1] if raw.endswith(",") else raw  # the Go SDK appends "," to every search
    negate = exact = False
    scopes: set[str] = set()
    seen: set[str] = set()
    while True:
        head, sep, rest = text.partition(":")
        if not sep or head not in _SEARCH_PREFIXES or head in seen:
            break
        seen.add(head)
        text = rest
        if head == "escape":
            break
        if head == "not":
            negate = True
        elif head == "exact":
            exact = True
        else:
            scopes.add(head)
    if not text:
        raise invalid_param("search", "a non-empty search term after its options")
    return SearchQuery(
        term=text,
        negate=negate,
        exact=exact,
        scopes=frozenset(scopes) if scopes else frozenset({"name", "alias"}),
        scoped=bool(scopes),
    )


def _filter_error(expectation: str) -> InvalidInput:
    return invalid_param("filter", expectation)


def _parse_date_value(prop: str, value: str) -> DateTerm:
    if value.lower() == "none":
        return DateTerm(prop, "none")
    op: DateOperator = "eq"
    operator = _OPERATOR_RE.fullmatch(value)
    if operator is not None:
        op = cast(DateOperator, operator.group(1).lower())
        value = operator.group(2)
    expectation = (
        f'terms like {prop}="<RFC 3339 date>", {prop}=<lte|lt|gte|gt>:"<RFC 3339 date>" or {prop}=none'
    )
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        raise _filter_error(expectation)
    moment = parse_rfc3339(value[1:-1])
    if moment is None:
        raise _filter_error(expectation)
    return DateTerm(prop, op, moment)


def parse_filter(raw: str | None) -> KeyFilter | None:
    """The E2 filter grammar: space-separated ``<property>=<value>`` or ``<property>=<op>:<value>``.

    Dates are quoted RFC 3339 or ``none``; ``extractable`` is true/false in any case; ``state`` is
    a comma list as in the ``state`` parameter. At most three terms per property.
    """
    if raw is None:
        return None
    if len(raw) > MAX_FILTER_LENGTH:
        raise _filter_error(f"at most {MAX_FILTER_LENGTH} characters")
    terms = raw.split()
    if not terms:
        return None
    counts: Counter[str] = Counter()
    dates: list[DateTerm] = []
    states: list[frozenset[int]] = []
    extractable: list[bool] = []
    for term in terms:
        prop, sep, value = term.partition("=")
        if not sep or not value:
            raise _filter_error("space-separated terms of the form <property>=<value>")
        counts[prop] += 1
        if prop in DATE_PROPERTIES:
            dates.append(_parse_date_value(prop, value))
        elif prop == "extractable":
            if value.lower() not in ("true", "false"):
                raise _filter_error("extractable=true or extractable=false")
            extractable.append(value.lower() == "true")
        elif prop == "state":
            states.append(parse_states(value, "filter"))
        else:
            properties = ", ".join([*DATE_PROPERTIES, "extractable", "state"])
            raise _filter_error(f"terms on the properties [{properties}]")
        if counts[prop] > MAX_TERMS_PER_PROPERTY:
            raise _filter_error(f"at most {MAX_TERMS_PER_PROPERTY} terms on the same property")
    return KeyFilter(dates=tuple(dates), states=tuple(states), extractable=tuple(extractable))


def _both_given(name: str) -> InvalidInput:
    return invalid_param(name, "given either as a query parameter or inside 'filter', not both")


def parse_list_keys_query(query: Mapping[str, str], *, head: bool = False) -> ListKeysQuery:
    """E2's query string. `head=True` (E3) parses only what HEAD takes: state, extractable, filter."""
    key_filter = parse_filter(_get(query, "filter"))
    state_raw = _get(query, "state")
    extractable_raw = _get(query, "extractable")
    if key_filter is not None and key_filter.states and state_raw is not None:
        raise _both_given("state")
    if key_filter is not None and key_filter.extractable and extractable_raw is not None:
        raise _both_given("extractable")
    if state_raw is not None:
        states = parse_states(state_raw)
    elif key_filter is not None and key_filter.states:
        states = VALID_STATES  # the filter's state terms decide
    else:
        states = DEFAULT_STATES
    extractable = parse_bool_param(extractable_raw, "extractable")
    if head:
        return ListKeysQuery(states=states, extractable=extractable, filter=key_filter)
    return ListKeysQuery(
        limit=parse_int_param(
            _get(query, "limit"), "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
        ),
        offset=parse_int_param(_get(query, "offset"), "offset", default=0, minimum=0),
        states=states,
        extractable=extractable,
        sort=parse_sort(_get(query, "sort")),
        search=parse_search(_get(query, "search")),
        filter=key_filter,
    )


def parse_versions_query(query: Mapping[str, str]) -> VersionsQuery:
    """E12: ``limit`` 1..5000 (200), ``offset`` ≥ 0, ``totalCount``, ``allKeyStates``."""
    return VersionsQuery(
        limit=parse_int_param(
            _get(query, "limit"), "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
        ),
        offset=parse_int_param(_get(query, "offset"), "offset", default=0, minimum=0),
        total_count=bool(parse_bool_param(_get(query, "totalCount"), "totalCount")),
        all_key_states=bool(parse_bool_param(_get(query, "allKeyStates"), "allKeyStates")),
    )


def parse_key_rings_query(query: Mapping[str, str]) -> PageQuery:
    """E39: ``limit`` 0..5000 where 0 means the default 100 (§8.11), ``offset``, ``totalCount``."""
    limit = parse_int_param(
        _get(query, "limit"), "limit", default=KEY_RINGS_DEFAULT_LIMIT, minimum=0, maximum=MAX_LIMIT
    )
    return PageQuery(
        limit=limit or KEY_RINGS_DEFAULT_LIMIT,
        offset=parse_int_param(_get(query, "offset"), "offset", default=0, minimum=0),
        total_count=bool(parse_bool_param(_get(query, "totalCount"), "totalCount")),
    )


# --- evaluation -------------------------------------------------------------------------------


def paginate(items: Sequence[T], limit: int, offset: int) -> list[T]:
    return list(items[offset : offset + limit])


def sort_keys(keys: Iterable[Key], sort: Sequence[SortKey] = DEFAULT_SORT) -> list[Key]:
    """Multi-field sort; missing values last ascending, ties by ``id`` ascending (stable sorts
    applied from the least significant field to the most significant one)."""
    ordered = sorted(keys, key=lambda k: k.id)
    for sort_key in reversed(sort):
        getter = SORT_FIELDS[sort_key.field]

        def rank(key: Key, getter: Callable[[Key], Any] = getter) -> tuple[int, Any]:
            value = getter(key)
            return (1, 0) if value is None else (0, value)

        ordered.sort(key=rank, reverse=sort_key.descending)
    return ordered


def search_too_broad() -> InvalidInput:
    exc = InvalidInput(
        f"The search space is larger than {SEARCH_SPACE_LIMIT} keys. Narrow it with the 'state' or "
        "'extractable' query parameters or the 'X-Kms-Key-Ring' header.",
        reason=Reason.INVALID_INPUT,
        target="search",
    )
    exc.metadata[TARGET_TYPE] = "param"
    return with_kp_code(exc, "KEY_SEARCH_TOO_BROAD")


def admits(key: Key, query: ListKeysQuery, key_ring: str | None = None) -> bool:
    """Whether `key` is in the space the non-search criteria select (state, extractable, ring, filter)."""
    return (
        int(key.state) in query.states
        and (query.extractable is None or key.extractable is query.extractable)
        and (key_ring is None or key.key_ring == key_ring)
        and (query.filter is None or query.filter.matches(key))
    )


def list_keys(keys: Iterable[Key], query: ListKeysQuery, *, key_ring: str | None = None) -> KeyListing:
    """Apply an E2 query to a tenant's keys: narrow, search, sort, page.

    `key_ring` is the ``x-kms-key-ring`` header, which filters lists. With a search over more than
    5000 keys, only a lookup hit (full key ID or exact alias) is returned, flagged
    ``incompleteSearch``; without a hit the answer is ``KEY_SEARCH_TOO_BROAD``.
    """
    space = [key for key in keys if admits(key, query, key_ring)]
    search = query.search
    if search is None:
        ordered = sort_keys(space, query.sort)
        return KeyListing(paginate(ordered, query.limit, query.offset), len(ordered))

    hit = search.lookup(space)
    if hit is not None and not search.matches(hit):
        hit = None
    if len(space) > SEARCH_SPACE_LIMIT:
        if hit is None:
            raise search_too_broad()
        return KeyListing(paginate([hit], query.limit, query.offset), 1, incomplete_search=True)
    ordered = sort_keys((key for key in space if search.matches(key)), query.sort)
    if hit is not None:
        ordered = [hit, *(key for key in ordered if key.id != hit.id)]
    return KeyListing(paginate(ordered, query.limit, query.offset), len(ordered))
