"""Channel edges: the runtime API, files, and (later) Slack, WhatsApp and email."""
