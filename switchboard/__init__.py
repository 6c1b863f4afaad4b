"""Composition root: settings loading, the aiohttp application, the CLI."""
