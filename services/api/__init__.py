"""The gRPC API of the service: the servicer, its interceptors, and proto <-> domain conversion."""
