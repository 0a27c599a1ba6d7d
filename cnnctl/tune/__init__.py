"""`cnnctl tune`: hyperparameter search over a config with Optuna, every trial an ordinary run
directory trained in its own process (space: the search space; study: storage, sampler, pruner
and results; workers: the loop that runs trials; trial: one trial's process)."""
