"""The response cache (`--cache-config local,size=N`, `response_cache { enable: true }`): answers repeated requests."""
