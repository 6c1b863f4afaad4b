"""Running one workflow run in its own process: unconfined (``process_runner``) or in a bwrap
sandbox (``sandbox_runner``: fresh, forked from a zygote, or warm). README "Sandbox" explains the
isolation; ``inside/`` holds the programs that run inside the sandbox."""
