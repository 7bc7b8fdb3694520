"""The training of one run: the loop, its checkpoints, evaluation, optimiser and schedule,
models, device handling, logging sinks, and the Ray Train runner."""
