"""The public gRPC API: authenticates, checks roles, composes the backend services."""
