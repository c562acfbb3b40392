"""KServe v2 HTTP/REST with Triton's extensions, on aiohttp."""
