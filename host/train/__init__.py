"""Training on the engine: the trainer, one step's forward and backward (trainstep), inference
(forward), the host's light ops (hostops), the SMD / SLU schedule, the run's config and progress."""
