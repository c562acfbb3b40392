"""`--http-restricted-api`: a middleware refusing requests to restricted routes that lack the header.

Installed only when a category is restricted, so an unrestricted server runs no check at all; when one is, a
request costs one dict lookup by its route's canonical path. Unknown paths (404) are not restricted.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from modelgate.server.frontends.api_categories import HTTP_PATH_CATEGORIES
from modelgate.server.frontends.api_restrictions import HeaderRule, rules_by_endpoint
from modelgate.server.frontends.http.error_middleware import route_error_response


def restriction_middleware(restrictions: Mapping[str, HeaderRule]):
    """Middleware answering 403 for a restricted route without its header; None when nothing is restricted."""
    rules = rules_by_endpoint(restrictions, HTTP_PATH_CATEGORIES)
    if not rules:
        return None

    @web.middleware
    async def check(request: web.Request, handler):
        resource = request.match_info.route.resource
        rule = rules.get(resource.canonical) if resource is not None else None
        if rule is not None and not rule.permits(request.headers.get(rule.header)):
            refusal = rule.refusal("API")
            # Before the body is read: the client is told at once, and its body is not buffered.
            return route_error_response(request, refusal.http_status, refusal.message)
        return await handler(request)

    return check
