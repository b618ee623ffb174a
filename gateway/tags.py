"""Tags as canonical JSON text (sorted keys): how the buffer and the local store keep them.

Encoding a small dict with ``json.dumps`` costs ~5 us, which was the largest
single cost of the pipeline (two encodings per reading: buffer and local store,
~20 % of its CPU on the bench). Tag sets repeat on every poll, so both keep a
:class:`TagsTextCache` keyed by the tags' content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

EMPTY_TAGS: Final[Mapping[str, str]] = MappingProxyType({})

# Past this many distinct tag sets (tags that vary per reading) the cache
# starts again from empty, so memory stays bounded.
_CACHE_MAX: Final = 20_000


def encode_tags(tags: Mapping[str, str]) -> str:
    # ensure_ascii (the default) escapes lone surrogates, so the text is always
    # valid UTF-8; sort_keys makes equal tag sets share one text (one series).
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"))


def decode_tags(text: str) -> Mapping[str, str]:
    if not text:
        return EMPTY_TAGS
    return MappingProxyType(json.loads(text))


class TagsTextCache:
    """``encode_tags`` with memory: one encoding per distinct tag set ("" for no tags)."""

    def __init__(self, max_entries: int = _CACHE_MAX) -> None:
        self.max_entries = max_entries
        self._texts: dict[tuple[tuple[str, str], ...], str] = {}

    def __call__(self, tags: Mapping[str, str]) -> str:
        if not tags:
            return ""
        try:
            key = tuple(tags.items())
            text = self._texts.get(key)
        except TypeError:  # an unhashable value breaks the contract; still encode it
            return encode_tags(tags)
        if text is None:
            text = encode_tags(tags)
            if len(self._texts) >= self.max_entries:
                self._texts.clear()
            self._texts[key] = text
        return text
