"""The HTTP face of tasktrail: FastAPI app factory, routes, schemas, auth, the CLI."""
