"""The network plan: its schema and checks (schema), building one from a model name with numpy
alone (planbuild), the DDR layout of its buffers (layout) and weights.bin (weightsfile)."""
