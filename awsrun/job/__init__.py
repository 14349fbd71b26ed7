"""Job use cases: submit, jobs, logs, pull, kill, attach; tmux on the target, several nodes, recovery from S3 checkpoints, requirements, TensorBoard/Jupyter."""
