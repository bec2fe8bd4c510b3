"""botocore's endpoints data, with only S3's entries ever built.

`endpoints.json` describes ~400 services in every partition. botocore parses it whole when a
client is created; in a process that only talks to S3 that costs ~7 MiB of resident memory which
stays even if the other services are dropped afterwards (the freed objects fragment the heap).
Here the file's skeleton (partitions, their `services` object) is walked by hand and every value
is parsed by the standard library's JSON decoder; values of services other than S3 are parsed and
dropped one at a time, so they never exist together. Anything unexpected in the file's shape
raises ValueError and the caller falls back to botocore's own loading.
"""

from __future__ import annotations

import gzip
import json
import os
from typing import Any

KEEP = "s3"


def load_s3_endpoints(search_paths: list[str]) -> tuple[dict[str, Any], str]:
    """(endpoints data restricted to S3, the path botocore would report)."""
    for base in search_paths:
        for suffix in (".json", ".json.gz"):
            path = os.path.join(base, "endpoints" + suffix)
            if os.path.isfile(path):
                if suffix == ".json":
                    with open(path, encoding="utf-8") as handle:
                        text = handle.read()
                else:
                    with gzip.open(path, "rt", encoding="utf-8") as handle:
                        text = handle.read()
                return _Skeleton(text).parse(), os.path.join(base, "endpoints")
    raise ValueError("botocore's endpoints data not found")


class _Skeleton:
    """{"partitions": [{..., "services": {"s3": {...}, <others: parsed, dropped>}}], ...}"""

    def __init__(self, text: str) -> None:
        self._text = text
        self._decoder = json.JSONDecoder()

    def parse(self) -> dict[str, Any]:
        value, end = self._object(self._skip(0), "")
        if self._skip(end) != len(self._text):
            raise ValueError("trailing data after the endpoints object")
        return value

    def _skip(self, pos: int) -> int:
        text = self._text
        while pos < len(text) and text[pos] in " \t\n\r":
            pos += 1
        return pos

    def _expect(self, pos: int, char: str) -> int:
        if self._text[pos:pos + 1] != char:
            raise ValueError(f"expected {char!r} at offset {pos}")
        return self._skip(pos + 1)

    def _value(self, pos: int) -> tuple[Any, int]:
        try:
            return self._decoder.raw_decode(self._text, pos)
        except json.JSONDecodeError as error:
            raise ValueError(str(error)) from None

    def _object(self, pos: int, parent: str) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        pos = self._expect(pos, "{")
        if self._text[pos:pos + 1] == "}":
            return out, pos + 1
        while True:
            key, pos = self._value(pos)
            if not isinstance(key, str):
                raise ValueError(f"object key at offset {pos} is not a string")
            pos = self._expect(self._skip(pos), ":")
            if parent == "services" and key != KEEP:
                _, pos = self._value(pos)  # parsed and dropped at once
            elif key == "services" and parent == "partitions":
                out[key], pos = self._object(pos, "services")
            elif key == "partitions" and parent == "":
                out[key], pos = self._partitions(pos)
            else:
                out[key], pos = self._value(pos)
            pos = self._skip(pos)
            if self._text[pos:pos + 1] == "}":
                return out, pos + 1
            pos = self._expect(pos, ",")

    def _partitions(self, pos: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        pos = self._expect(pos, "[")
        if self._text[pos:pos + 1] == "]":
            return items, pos + 1
        while True:
            item, pos = self._object(pos, "partitions")
            items.append(item)
            pos = self._skip(pos)
            if self._text[pos:pos + 1] == "]":
                return items, pos + 1
            pos = self._expect(pos, ",")
