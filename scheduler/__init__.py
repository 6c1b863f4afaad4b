"""The cron store (see DESIGN §6). Empty until the scheduler issue lands."""
