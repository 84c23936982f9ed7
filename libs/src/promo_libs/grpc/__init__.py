"""gRPC plumbing shared by every server and client: bootstrap, interceptors, error mapping."""
