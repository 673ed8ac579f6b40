"""Training on the engine: the trainer, the op table (ops: each op type's forward and backward),
its walk (walk) for one step's forward and backward (trainstep) and for inference (forward), the
host's float32 ops (hostops), the SMD / SLU schedule, the run's config and progress."""
