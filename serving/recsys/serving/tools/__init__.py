"""Tools around serving that are not on the request path (the HTTP load loop of benchmarks and fault tests)."""
