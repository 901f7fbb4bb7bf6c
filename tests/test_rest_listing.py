"""E2 list keys: limit/offset/state/extractable, sort, the search and filter grammars; E12/E39 paging."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsmbridge.core.model import Key, KeyState
from hsmbridge.errors import InvalidInput
from hsmbridge.rest.errors import Operations, to_http_error
from hsmbridge.rest.listing import (
    DEFAULT_STATES,
    DateTerm,
    KeyFilter,
    ListKeysQuery,
    SearchQuery,
    SortKey,
    list_keys,
    parse_filter,
    parse_key_rings_query,
    parse_list_keys_query,
    parse_search,
    parse_sort,
    parse_versions_query,
    sort_keys,
)

T0 = datetime(2022, 2, 1, tzinfo=UTC)


def make_key(
    n: int,
    name: str = "",
    *,
    aliases: list[str] | None = None,
    state: KeyState = KeyState.ACTIVE,
    extractable: bool = False,
    imported: bool = False,
    created: datetime | None = None,
    rotated: datetime | None = None,
    deleted: datetime | None = None,
    expires: datetime | None = None,
    ring: str = "default",
) -> Key:
    key_id = str(uuid.UUID(int=n))
    created = created or T0 + timedelta(days=n)
    return Key(
        id=key_id,
        tenant="tenant",
        name=name or f"key-{n}",
        extractable=extractable,
        imported=imported,
        state=state,
        created_at=created,
        created_by="IBMid-0000000000",
        updated_at=rotated or deleted or created,
        current_version_id=key_id,
        aliases=aliases or [],
        last_rotated_at=rotated,
        deleted_at=deleted,
        expires_at=expires,
        key_ring=ring,
    )


def ids(keys: list[Key]) -> list[str]:
    return [key.name for key in keys]


def param_error(exc: InvalidInput) -> dict[str, Any]:
    status, body = to_http_error(exc, Operations.LIST_KEYS)
    assert status == 400
    resource = body["resources"][0]
    assert resource["errorMsg"] == "Bad Request: Keys could not be listed. See 'reasons' for more details."
    return resource["reasons"][0]


def rejects(query: dict[str, str], param: str) -> dict[str, Any]:
    with pytest.raises(InvalidInput) as caught:
        parse_list_keys_query(query)
    reason = param_error(caught.value)
    assert reason["target"] == {"type": "param", "name": param}
    return reason


# --- the simple parameters -----------------------------------------------------------------------


def test_defaults() -> None:
    query = parse_list_keys_query({})
    assert query == ListKeysQuery(limit=200, offset=0, states=frozenset({0, 1, 2, 3}), sort=(SortKey("id"),))
    assert query.extractable is None and query.search is None and query.filter is None


def test_go_sdk_get_keys_query() -> None:
    query = parse_list_keys_query({"limit": "2000", "offset": "0"})
    assert (query.limit, query.offset) == (2000, 0)


@pytest.mark.parametrize("limit", ["1", "5000"])
def test_limit_bounds(limit: str) -> None:
    assert parse_list_keys_query({"limit": limit}).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", "5001", "-1", "abc", "1.5", " 5", "1e3", "９"])
def test_limit_out_of_range(limit: str) -> None:
    reason = rejects({"limit": limit}, "limit")
    assert reason["code"] == "INVALID_PARAM_ERR"
    assert reason["message"] == "The param 'limit' must be: an integer between 1 and 5000"


@pytest.mark.parametrize("offset", ["-1", "x", "99999999999999999999999"])
def test_offset_must_be_a_non_negative_integer(offset: str) -> None:
    rejects({"offset": offset}, "offset")


@pytest.mark.parametrize(
    ("raw", "states"),
    [("0,1,2,3,5", {0, 1, 2, 3, 5}), ("5", {5}), ("1,1", {1}), ("3,1", {1, 3})],
)
def test_state_lists(raw: str, states: set[int]) -> None:
    assert parse_list_keys_query({"state": raw}).states == states


@pytest.mark.parametrize("raw", ["4", "1,4", "6", "1, 2", "1,2,", ",1", "1;2", "10", "a", "1,,2"])
def test_state_lists_are_strict(raw: str) -> None:
    reason = rejects({"state": raw}, "state")
    assert "delimited by commas with no whitespace or trailing commas" in reason["message"]


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("false", False), ("TRUE", True), ("0", False)])
def test_extractable(raw: str, value: bool) -> None:
    assert parse_list_keys_query({"extractable": raw}).extractable is value


def test_extractable_rejects_the_rest() -> None:
    rejects({"extractable": "maybe"}, "extractable")


def test_empty_parameters_are_absent_ones() -> None:
    assert parse_list_keys_query({"limit": "", "state": "", "sort": "", "search": "", "filter": ""}) == (
        parse_list_keys_query({})
    )


# --- sort -------------------------------------------------------------------------------------------


def test_sort_parsing() -> None:
    assert parse_sort("-creationDate,id") == (SortKey("creationDate", True), SortKey("id"))
    assert parse_sort("id,-id") == (SortKey("id"),)
    assert parse_sort(None) == (SortKey("id"),)


@pytest.mark.parametrize("raw", ["name", "id,", "-", "+id", "Id", " id", "id ,state", "x" * 257])
def test_sort_rejects_unknown_fields(raw: str) -> None:
    rejects({"sort": raw}, "sort")


def test_sorting_by_several_fields_with_missing_dates_last() -> None:
    keys = [
        make_key(1, "a", rotated=T0 + timedelta(days=9), extractable=True),
        make_key(2, "b", extractable=False),
        make_key(3, "c", rotated=T0 + timedelta(days=5), extractable=False),
        make_key(4, "d", extractable=True),
    ]
    assert ids(sort_keys(keys, parse_sort("lastRotateDate"))) == ["c", "a", "b", "d"]
    assert ids(sort_keys(keys, parse_sort("-lastRotateDate"))) == ["b", "d", "a", "c"]
    assert ids(sort_keys(keys, parse_sort("extractable,-creationDate"))) == ["c", "b", "d", "a"]
    assert ids(sort_keys(keys, parse_sort("-id"))) == ["d", "c", "b", "a"]


# --- search grammar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("foobar", SearchQuery("foobar")),
        ("not:foobar", SearchQuery("foobar", negate=True)),
        ("exact:foobar", SearchQuery("foobar", exact=True)),
        ("escape:not:foobar", SearchQuery("not:foobar")),
        ("not:exact:foobar", SearchQuery("foobar", negate=True, exact=True)),
        ("exact:not:foobar", SearchQuery("foobar", negate=True, exact=True)),
        ("exact:escape:not:foobar", SearchQuery("not:foobar", exact=True)),
        ("name:exact:foobar", SearchQuery("foobar", exact=True, scopes=frozenset({"name"}), scoped=True)),
        ("alias:foobar", SearchQuery("foobar", scopes=frozenset({"alias"}), scoped=True)),
        ("alias:name:foobar", SearchQuery("foobar", scopes=frozenset({"alias", "name"}), scoped=True)),
        ("name:name:x", SearchQuery("name:x", scopes=frozenset({"name"}), scoped=True)),
        ("foo:bar", SearchQuery("foo:bar")),
        ("foobar,", SearchQuery("foobar")),  # the Go SDK appends a comma
        ("escape:exact:", SearchQuery("exact:")),
    ],
)
def test_search_grammar(raw: str, expected: SearchQuery) -> None:
    assert parse_search(raw) == expected


@pytest.mark.parametrize("raw", ["not:", "exact:not:", "escape:", ",", "x" * 257])
def test_search_needs_a_term_of_at_most_256_characters(raw: str) -> None:
    rejects({"search": raw}, "search")


SEARCH_KEYS = [
    make_key(1, "FooBar-prod", aliases=["payments"]),
    make_key(2, "other", aliases=["foobar", "misc"]),
    make_key(3, "foobar"),
    make_key(4, "unrelated", aliases=["FOOBAR-2"]),
    make_key(5, "nothing"),
]


def search(raw: str, keys: list[Key] = SEARCH_KEYS, **params: str) -> list[str]:
    return ids(list_keys(keys, parse_list_keys_query({"search": raw, **params})).keys)


def test_default_search_is_case_insensitive_contains_on_names_and_aliases() -> None:
    # key 2's alias "foobar" is an exact alias lookup, so it comes first.
    assert search("foobar") == ["other", "FooBar-prod", "foobar", "unrelated"]
    assert search("FOOB") == ["FooBar-prod", "other", "foobar", "unrelated"]


def test_scopes() -> None:
    assert search("name:foobar") == ["FooBar-prod", "foobar"]
    assert search("alias:foobar") == ["other", "unrelated"]
    assert search("alias:name:pay") == ["FooBar-prod"]


def test_exact_and_not() -> None:
    assert search("exact:foobar") == ["other", "foobar"]
    assert search("name:exact:FOOBAR") == ["foobar"]
    assert search("not:foobar") == ["nothing"]
    assert search("not:exact:foobar") == ["FooBar-prod", "unrelated", "nothing"]
    assert search("exact:not:foobar") == search("not:exact:foobar")


def test_escape_searches_for_prefix_text_literally() -> None:
    keys = [make_key(1, "not:secret"), make_key(2, "secret")]
    assert search("escape:not:secret", keys) == ["not:secret"]
    assert search("not:secret", keys) == []


def test_a_full_key_id_matches_the_id_and_comes_first() -> None:
    target = SEARCH_KEYS[4]
    assert search(target.id) == ["nothing"]
    assert search(target.id.upper()) == ["nothing"]
    assert search("name:" + target.id) == []


def test_an_alias_lookup_hit_comes_first() -> None:
    keys = [make_key(1, "pay-a"), make_key(2, "pay-b"), make_key(3, "zzz", aliases=["pay"])]
    assert search("pay", keys) == ["zzz", "pay-a", "pay-b"]
    assert search("pay", keys, sort="-id") == ["zzz", "pay-b", "pay-a"]


def test_search_respects_the_other_criteria() -> None:
    keys = [
        make_key(1, "foo-live"),
        make_key(2, "foo-gone", state=KeyState.DESTROYED, deleted=T0),
        make_key(3, "foo-std", extractable=True),
    ]
    assert search("foo", keys) == ["foo-live", "foo-std"]
    assert search("foo", keys, state="5") == ["foo-gone"]
    assert search("foo", keys, extractable="false") == ["foo-live"]


def test_search_is_capped_at_5000_keys() -> None:
    keys = [make_key(n) for n in range(1, 5002)]
    with pytest.raises(InvalidInput) as caught:
        list_keys(keys, parse_list_keys_query({"search": "key-7"}))
    reason = param_error(caught.value)
    assert reason["code"] == "KEY_SEARCH_TOO_BROAD"
    assert reason["target"] == {"type": "param", "name": "search"}


def test_an_over_broad_search_still_returns_a_lookup_hit_flagged_incomplete() -> None:
    keys = [make_key(n) for n in range(1, 5002)]
    listing = list_keys(keys, parse_list_keys_query({"search": keys[41].id}))
    assert ids(listing.keys) == ["key-42"]
    assert (listing.total, listing.incomplete_search) == (1, True)
    assert listing.extra_metadata == {"incompleteSearch": True}


def test_narrowing_brings_a_search_back_under_the_cap() -> None:
    keys = [make_key(n, extractable=n > 10) for n in range(1, 5002)]
    listing = list_keys(keys, parse_list_keys_query({"search": "key-1", "extractable": "false"}))
    assert ids(listing.keys) == ["key-1", "key-10"]
    assert listing.extra_metadata == {}
    assert list_keys(keys[:5000], parse_list_keys_query({"search": "key-4999"})).total == 1


# --- filter grammar ----------------------------------------------------------------------------------


def test_filter_examples_from_the_api_reference() -> None:
    feb15 = datetime(2022, 2, 15, tzinfo=UTC)
    mar15 = datetime(2022, 3, 15, tzinfo=UTC)
    assert parse_filter('lastRotateDate="2022-02-15T00:00:00Z"') == KeyFilter(
        dates=(DateTerm("lastRotateDate", "eq", feb15),)
    )
    assert parse_filter(
        'lastRotateDate=gte:"2022-02-15T00:00:00Z" lastRotateDate=lt:"2022-03-15T00:00:00Z"'
    ) == (
        KeyFilter(dates=(DateTerm("lastRotateDate", "gte", feb15), DateTerm("lastRotateDate", "lt", mar15)))
    )
    assert parse_filter(
        'lastRotateDate="2022-02-15T00:00:00Z" state=0,1,2,3,5 extractable=false'
    ) == KeyFilter(
        dates=(DateTerm("lastRotateDate", "eq", feb15),),
        states=(frozenset({0, 1, 2, 3, 5}),),
        extractable=(False,),
    )


def test_filter_as_the_go_sdk_builds_it() -> None:
    # FilterQueryBuilder prefixes every term with a space and formats dates as RFC3339Nano.
    parsed = parse_filter(
        ' creationDate=gt:"2022-02-15T10:20:30.123456789Z" expirationDate=none extractable=TRUE'
    )
    assert parsed == KeyFilter(
        dates=(
            DateTerm("creationDate", "gt", datetime(2022, 2, 15, 10, 20, 30, 123456, tzinfo=UTC)),
            DateTerm("expirationDate", "none"),
        ),
        extractable=(True,),
    )


@pytest.mark.parametrize(
    "raw",
    [
        "creationDate=2022-02-15T00:00:00Z",  # not quoted
        'creationDate=eq:"2022-02-15T00:00:00Z"',
        "creationDate=lte:none",
        'creationDate="2022-02-15"',
        'creationDate="2022-02-15T00:00:00Z',
        'name="foo"',
        "creationDate",
        "creationDate=",
        "=none",
        "state=1,4",
        "state=1, 2",
        "extractable=yes",
        "extractable=gt:true",
        "state=lt:1",
        'creationDate=gte:"2022-02-15T00:00:00Z" creationDate=gte:"2022-02-15T00:00:00Z" '
        'creationDate=gte:"2022-02-15T00:00:00Z" creationDate=lt:"2023-02-15T00:00:00Z"',
        "state=1 " * 200,
    ],
)
def test_bad_filters(raw: str) -> None:
    reason = rejects({"filter": raw}, "filter")
    assert reason["code"] == "INVALID_PARAM_ERR"


def test_three_terms_on_one_property_are_allowed() -> None:
    parsed = parse_filter("state=1,2,3 state=1,2 state=2")
    assert parsed is not None and len(parsed.states) == 3


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"filter": "state=1", "state": "1"}, "state"),
        ({"filter": "extractable=true", "extractable": "true"}, "extractable"),
    ],
)
def test_state_and_extractable_cannot_be_given_twice(query: dict[str, str], param: str) -> None:
    rejects(query, param)


FILTER_KEYS = [
    make_key(1, "never-rotated", created=datetime(2022, 1, 10, tzinfo=UTC)),
    make_key(2, "rotated-feb", rotated=datetime(2022, 2, 15, 0, 0, 0, 400000, tzinfo=UTC)),
    make_key(3, "rotated-mar", rotated=datetime(2022, 3, 20, tzinfo=UTC), extractable=True),
    make_key(
        4,
        "deleted",
        state=KeyState.DESTROYED,
        deleted=datetime(2022, 2, 20, tzinfo=UTC),
        rotated=datetime(2022, 2, 16, tzinfo=UTC),
    ),
    make_key(5, "expiring", expires=datetime(2023, 1, 1, tzinfo=UTC), state=KeyState.DEACTIVATED),
]


def filtered(raw: str, **params: str) -> list[str]:
    return ids(list_keys(FILTER_KEYS, parse_list_keys_query({"filter": raw, **params})).keys)


def test_filter_semantics() -> None:
    # equality at the precision clients see: 00:00:00.4 renders as 00:00:00
    assert filtered('lastRotateDate="2022-02-15T00:00:00Z"') == ["rotated-feb"]
    assert filtered('lastRotateDate=gte:"2022-02-15T00:00:00Z" lastRotateDate=lt:"2022-03-15T00:00:00Z"') == [
        "rotated-feb"
    ]
    assert filtered('lastRotateDate=gte:"2022-02-15T00:00:00Z" state=0,1,2,3,5') == [
        "rotated-feb",
        "rotated-mar",
        "deleted",
    ]
    assert filtered("lastRotateDate=NONE") == ["never-rotated", "expiring"]
    assert filtered("expirationDate=none state=3") == []
    assert filtered('expirationDate=lte:"2023-01-01T00:00:00Z"') == ["expiring"]
    assert filtered("extractable=true") == ["rotated-mar"]
    assert filtered('deletionDate=gt:"2022-01-01T00:00:00+02:00" state=5') == ["deleted"]
    assert filtered("state=1 state=2") == []


def test_destroyed_keys_are_listed_only_on_request() -> None:
    assert "deleted" not in ids(list_keys(FILTER_KEYS, parse_list_keys_query({})).keys)
    assert ids(list_keys(FILTER_KEYS, parse_list_keys_query({"state": "5"})).keys) == ["deleted"]
    assert {0, 1, 2, 3} == DEFAULT_STATES


# --- listing: narrowing, paging, totals --------------------------------------------------------------


def test_key_ring_header_filters() -> None:
    keys = [make_key(1, ring="default"), make_key(2, ring="ring-a"), make_key(3, ring="ring-a")]
    assert ids(list_keys(keys, parse_list_keys_query({}), key_ring="ring-a").keys) == ["key-2", "key-3"]
    assert list_keys(keys, parse_list_keys_query({})).total == 3


def test_paging_and_total() -> None:
    keys = [make_key(n) for n in range(1, 11)]
    listing = list_keys(keys, parse_list_keys_query({"limit": "3", "offset": "8"}))
    assert ids(listing.keys) == ["key-9", "key-10"]
    assert listing.total == 10
    assert list_keys(keys, parse_list_keys_query({"offset": "50"})).keys == []


def test_default_order_is_by_id() -> None:
    keys = [make_key(n) for n in (5, 3, 9, 1)]
    assert ids(list_keys(keys, ListKeysQuery()).keys) == ["key-1", "key-3", "key-5", "key-9"]


def test_head_parses_only_what_head_takes() -> None:
    query = parse_list_keys_query({"limit": "0", "sort": "bogus", "search": "", "state": "1"}, head=True)
    assert query.states == {1}
    with pytest.raises(InvalidInput):
        parse_list_keys_query({"state": "4"}, head=True)


# --- E12 / E39 ----------------------------------------------------------------------------------------


def test_versions_query() -> None:
    query = parse_versions_query({})
    assert (query.limit, query.offset, query.total_count, query.all_key_states) == (200, 0, False, False)
    query = parse_versions_query(
        {"limit": "5000", "offset": "3", "totalCount": "true", "allKeyStates": "True"}
    )
    assert (query.limit, query.offset, query.total_count, query.all_key_states) == (5000, 3, True, True)
    for bad in ({"limit": "0"}, {"limit": "5001"}, {"totalCount": "yes"}, {"allKeyStates": "2"}):
        with pytest.raises(InvalidInput):
            parse_versions_query(bad)


def test_key_rings_query() -> None:
    assert parse_key_rings_query({}).limit == 100
    assert parse_key_rings_query({"limit": "0"}).limit == 100  # §8.11
    assert parse_key_rings_query({"limit": "5000", "totalCount": "true"}).total_count is True
    with pytest.raises(InvalidInput):
        parse_key_rings_query({"limit": "5001"})


# --- the parsers never fail any other way --------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "not:",
        "exact:",
        "escape:",
        "alias:",
        "name:",
        ":",
        ",",
        " ",
        "=",
        '"',
        "state=",
        "extractable=",
        "creationDate=",
        "lastRotateDate=",
        "gte:",
        "lt:",
        "none",
        "2022-02-15T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "0,1,2,3,5",
        "4",
        "true",
        "-id",
        "creationDate",
    ]
)
_GRAMMAR_TEXT = st.one_of(st.text(max_size=600), st.lists(_FRAGMENTS, max_size=30).map("".join))


@given(_GRAMMAR_TEXT)
def test_search_parser_raises_only_domain_errors(raw: str) -> None:
    try:
        parsed = parse_search(raw)
    except InvalidInput as exc:
        assert param_error(exc)["target"]["name"] == "search"
        return
    assert parsed is not None and parsed.term


@given(_GRAMMAR_TEXT)
def test_filter_parser_raises_only_domain_errors(raw: str) -> None:
    try:
        parsed = parse_filter(raw)
    except InvalidInput as exc:
        assert param_error(exc)["target"]["name"] == "filter"
        return
    if parsed is not None:
        for key in FILTER_KEYS:
            parsed.matches(key)


@given(
    st.dictionaries(
        st.sampled_from(["limit", "offset", "state", "extractable", "sort", "search", "filter", "other"]),
        _GRAMMAR_TEXT,
    )
)
def test_list_keys_raises_only_domain_errors(query: dict[str, str]) -> None:
    try:
        listing = list_keys(FILTER_KEYS + SEARCH_KEYS, parse_list_keys_query(query))
    except InvalidInput as exc:
        assert param_error(exc)["target"]["type"] == "param"
        return
    assert len(listing.keys) <= listing.total
