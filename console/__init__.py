"""The web console at ``/``: server-rendered pages over the same services as the API."""
