"""The tests' one reader of ``text/event-stream``: the API's records as ``{"id", "tag", "data"}`` dicts.

``SSEParser`` reads lines (from curl's output, a file, or a live response);
``SSEReader`` holds a live ``GET /events`` open with requests and hands out
records one at a time. Comments (``: keepalive``) and ``retry:`` are kept.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Iterator

import requests


class SSEParser:
    """Fields of an event stream gathered into records; a blank line ends each one."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        self.retry: int | None = None
        self._fields: dict[str, Any] = {}

    def feed(self, line: str) -> dict | None:
        """Take one line (without its newline); the record it completes, if any."""
        line = line.rstrip("\r\n")
        if line == "":
            record, self._fields = self._fields, {}
            return record if "data" in record else None
        if line.startswith(":"):
            self.comments.append(line)
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "retry":
            self.retry = int(value)
        elif name == "id":
            self._fields["id"] = int(value)
        elif name == "tag":
            self._fields["tag"] = value
        elif name == "data":
            self._fields["data"] = json.loads(value)
        return None

    def records(self, lines: Iterable[str]) -> Iterator[dict]:
        """Every complete record of ``lines``, in order."""
        for line in lines:
            record = self.feed(line)
            if record is not None:
                yield record


def records_of(text: str) -> list[dict]:
    """The complete records of a captured stream (e.g. curl's output, maybe still being written): a
    record not yet ended by its blank line is left out, not half-parsed."""
    complete, _, _partial = text.rpartition("\n\n")
    return list(SSEParser().records((complete + "\n\n").splitlines())) if complete else []


class SSEReader:
    """A live ``GET /events`` (a real HTTP client: requests), read record by record.

    ``source`` is the stream's URL or a test API environment (``ApiEnv``).
    """

    def __init__(self, source: Any, params: dict | None = None, headers: dict | None = None,
                 timeout: float = 10.0) -> None:
        url = source if isinstance(source, str) else source.url("/events")
        verify = True if isinstance(source, str) else source.verify
        self.response = requests.get(url, params=params, headers=headers, stream=True, timeout=timeout,
                                     verify=verify)
        lines = self.response.iter_lines(chunk_size=1, decode_unicode=True) \
            if self.response.status_code == 200 else iter(())
        self.parser = SSEParser()
        self.deadline: float | None = None
        self._records = self.parser.records(self._until_deadline(lines))

    def _until_deadline(self, lines: Iterator[str]) -> Iterator[str]:
        # Keepalives keep a quiet stream's reads from timing out: the deadline is checked on every line.
        for line in lines:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise TimeoutError
            yield line

    @property
    def comments(self) -> list[str]:
        return self.parser.comments

    @property
    def retry(self) -> int | None:
        return self.parser.retry

    def next_record(self) -> dict | None:
        """The next record (``None`` when the stream ends)."""
        return next(self._records, None)

    def records(self, count: int, within: float = 90.0) -> list[dict]:
        """The next ``count`` records (fewer if the stream ends first); ``AssertionError`` naming what came
        if they have not all come within ``within`` seconds (a stream that only sends keepalives)."""
        got: list[dict] = []
        self.deadline = time.monotonic() + within
        try:
            while len(got) < count:
                record = self.next_record()
                if record is None:
                    break
                got.append(record)
        except TimeoutError:
            shown = [r.get("data", {}).get("data", r.get("data")) for r in got]
            raise AssertionError(f"{len(got)} of {count} records within {within:g} s: {shown}") from None
        finally:
            self.deadline = None
        return got

    def __iter__(self) -> Iterator[dict]:
        return self._records

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> "SSEReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
