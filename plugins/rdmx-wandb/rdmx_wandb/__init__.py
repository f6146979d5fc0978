"""rdmx-wandb: Weights & Biases as an rdmx tracker."""
