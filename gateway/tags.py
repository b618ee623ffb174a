"""Tags as canonical JSON text (sorted keys): how the buffer and the local store keep them.

Encoding a small dict with ``json.dumps`` costs ~5 us, which was the largest
single cost of the pipeline (two encodings per reading: buffer and local store,
~20 % of its CPU on the bench). Tag sets repeat on every poll, so both keep a
:class:`TagsCache` keyed by the tags' content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, Generic, TypeVar

EMPTY_TAGS: Final[Mapping[str, str]] = MappingProxyType({})

# Past this many distinct tag sets (tags that vary per reading) the cache
# starts again from empty, so memory stays bounded.
_CACHE_MAX: Final = 20_000

T = TypeVar("T")


def encode_tags(tags: Mapping[str, str]) -> str:
    # ensure_ascii (the default) escapes lone surrogates, so the text is always
    # valid UTF-8; sort_keys makes equal tag sets share one text (one series).
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))


def decode_tags(text: str) -> Mapping[str, str]:
    if not text:
        return EMPTY_TAGS
    return MappingProxyType(json.loads(text))


class TagsCache(Generic[T]):
    """``compute(tags)`` with memory: one result per distinct tag set, ``empty`` for no tags.

    Keyed by the tags' content (tag sets repeat on every poll); bounded, it
    starts again from empty past ``max_entries`` distinct sets.
    """

    def __init__(self, compute: Callable[[Mapping[str, str]], T], empty: T, max_entries: int = _CACHE_MAX) -> None:
        self.compute = compute
        self.empty = empty
        self.max_entries = max_entries
        self._results: dict[tuple[tuple[str, str], ...], T] = {}

    def __call__(self, tags: Mapping[str, str]) -> T:
        if not tags:
            return self.empty
        try:
            key = tuple(tags.items())
            result = self._results.get(key)
        except TypeError:  # an unhashable value breaks the contract; still compute it
            return self.compute(tags)
        if result is None:
            result = self.compute(tags)
            if len(self._results) >= self.max_entries:
                self._results.clear()
            self._results[key] = result
        return result
