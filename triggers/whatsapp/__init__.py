"""The WhatsApp channel through Twilio: signed webhooks in, Messages API out (PROTOCOLS §2)."""
