"""The Slack channel: Events API and slash-command intake, OAuth installs, the reply sender."""
