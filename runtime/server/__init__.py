"""A runtime node: the durable runner behind gRPC (and REST) client APIs."""
