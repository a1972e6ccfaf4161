"""HTTP plumbing: the server and its listeners, routing, request parsing and
authentication, Matrix error JSON, rate limits and the outbound client."""
