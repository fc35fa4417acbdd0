"""Webhook bodies and headers, as plain functions: what ``POST /hook/<path>`` puts on the bus."""
from __future__ import annotations

import json
import urllib.parse
from typing import Any, Mapping

import yaml

from eventbus.errors import ApiError

HOOK_TAG_PREFIX = "salt/netapi/hook"
# Headers that carry credentials never reach the bus.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-auth-token", "cookie",
                                "set-cookie", "x-api-key"})
JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded",)
YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml")


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases, so a small body cannot expand into a huge event."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not accepted",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def hook_tag(path: tuple[str, ...]) -> str:
    """``salt/netapi/hook/<path>`` of the URL path segments after ``/hook``."""
    segments = [s for s in path if s]
    return "/".join((HOOK_TAG_PREFIX, *segments))


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The body as data: JSON, form or YAML by ``Content-Type``; ``ApiError`` 400/415 otherwise."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None
    if media in JSON_TYPES or media.endswith("+json") or media == "":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if media in FORM_TYPES:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
        form: dict[str, Any] = {}
        for key, value in pairs:
            form[key] = [*form[key], value] if isinstance(form.get(key), list) else (
                [form[key], value] if key in form else value)
        return form
    if media in YAML_TYPES:
        try:
            return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "malformed"
            raise ApiError(400, f"the request body is not valid YAML: {problem}") from None
    raise ApiError(415, f"Content-Type {media[:60]!r} is not supported; send JSON, form or YAML")


def public_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers without the ones that carry credentials."""
    return {name: value for name, value in headers.items() if name.lower() not in CREDENTIAL_HEADERS}
