"""The email channel (PROTOCOLS §3): SMTP intake, inbound-parse webhooks, threaded replies, and
the ``send_email`` built-in service."""
