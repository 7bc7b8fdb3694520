"""The training of one run: the loop, its checkpoints, evaluation, optimiser and schedule,
device handling, logging sinks, the journal of its epochs, and the Ray Train runner; and
linear classification on a frozen encoder (`linear_eval`, on Ray Train `linear_runner`)."""
