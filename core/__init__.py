"""Shared kernel: models, errors, settings, storage and ports. Imports no web or channel library."""
