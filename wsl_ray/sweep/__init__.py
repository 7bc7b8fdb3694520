"""A sweep's parts: the search space, the trial, the Optuna study, results and confirmation."""
