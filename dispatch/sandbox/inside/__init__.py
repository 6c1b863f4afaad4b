"""Programs run inside the sandbox by file path with the environment's interpreter: they import
nothing from Switchboard (the environment does not have it)."""
