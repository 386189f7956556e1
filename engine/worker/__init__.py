"""Running journeys: the runner, triggers, enrollment, the scheduler and versions."""
