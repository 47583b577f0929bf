"""The HTTP surface: FastAPI app, request/response schemas, auth, body limits, access log, the events endpoint."""
