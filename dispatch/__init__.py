"""The engine in the middle: queue, workers, runner, workflow registry, environments."""
