"""`--http-restricted-api` / `--grpc-restricted-protocol`: categories of endpoints that need a header.

A flag value is `<category>[,<category>...]:<header>=<value>`, as Triton's; the flag repeats, one header per
group of categories. A request to an endpoint of a restricted category must carry the header (HTTP header,
any case; gRPC metadata key, lower-cased) with exactly that value, or it is refused with PermissionDeniedError.

Frontends turn the restrictions into a map of only the restricted endpoints (`rules_by_endpoint`): with no
flag given the map is empty and they install no check at all, so an unrestricted request pays nothing.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelgate.core.errors import PermissionDeniedError
from modelgate.server.frontends.api_categories import CATEGORIES

HTTP_FLAG = "--http-restricted-api"
GRPC_FLAG = "--grpc-restricted-protocol"
_FORMAT = "<category>[,<category>...]:<header>=<value>"
# An HTTP header name (RFC 9110 token); gRPC metadata keys are the same, compared lower-cased.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Printable ASCII inside, no space at either end: HTTP strips a header value's surrounding spaces, so such a
# value could never match; ASCII keeps the comparison constant-time (hmac.compare_digest).
_HEADER_VALUE = re.compile(r"[!-~]([ -~]*[!-~])?")


@dataclass(frozen=True)
class HeaderRule:
    """The header a restricted category needs. `value` is a shared secret: kept out of repr and logs."""

    category: str
    header: str
    value: str = field(repr=False)

    def permits(self, sent: str | None) -> bool:
        # Constant time: a client may not learn the value one character at a time from response timings.
        return sent is not None and hmac.compare_digest(sent.encode(), self.value.encode())

    def refusal(self, what: str) -> PermissionDeniedError:
        """`what`: "API" (HTTP) or "protocol" (gRPC), as Triton words its message."""
        return PermissionDeniedError(
            f"This {what} is restricted, expecting header '{self.header}' (category '{self.category}')"
        )


def parse_restrictions(values: Iterable[str], flag: str) -> dict[str, HeaderRule]:
    """Category -> rule for the values of one flag; ValueError saying what is wrong and what is allowed.

    A category named twice (in one value or across values), an unknown category, or a value not of the form
    `<category>[,<category>...]:<header>=<value>` is an error.
    """
    rules: dict[str, HeaderRule] = {}
    for text in values:
        categories, header, value = _split(text, flag)
        shown = _without_value(text)
        for category in categories:
            if category not in CATEGORIES:
                raise ValueError(f"{flag} '{shown}': unknown category '{category}'; allowed: {', '.join(CATEGORIES)}")
            if category in rules:
                raise ValueError(f"{flag} '{shown}': category '{category}' is restricted twice")
            rules[category] = HeaderRule(category, header, value)
    return rules


def rules_by_endpoint(rules: Mapping[str, HeaderRule], categories: Mapping[str, str]) -> dict[str, HeaderRule]:
    """Endpoint -> rule for the endpoints (of `categories`: endpoint -> category) whose category is restricted."""
    return {endpoint: rules[category] for endpoint, category in categories.items() if category in rules}


def _split(text: str, flag: str) -> tuple[list[str], str, str]:
    shown = _without_value(text)
    categories_text, colon, header_text = text.partition(":")
    header, equals, value = header_text.partition("=")
    if not colon or not equals:
        raise ValueError(f"{flag} '{shown}': expected {_FORMAT}")
    categories = [c.strip() for c in categories_text.split(",")]
    if not all(categories):
        raise ValueError(f"{flag} '{shown}': an empty category; expected {_FORMAT}")
    if not _HEADER_NAME.fullmatch(header):
        raise ValueError(f"{flag} '{shown}': header '{header}' is not a valid header name")
    if flag == GRPC_FLAG and header.lower().endswith("-bin"):
        raise ValueError(f"{flag} '{shown}': a '-bin' metadata key carries bytes, not a text value")
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError(
            f"{flag} '{shown}': the header value must be printable ASCII, not empty, without spaces at either end"
        )
    return categories, header, value


def _without_value(text: str) -> str:
    """The flag value as errors show it: the header's value is a secret, not for a terminal or a log."""
    before, equals, _ = text.partition("=")
    return before + ("=..." if equals else "")
