"""The event store's infrastructure: configuration from a URL, the PostgreSQL recorder."""
