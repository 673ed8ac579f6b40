"""The training engine: the HLS C++ kernel (src/), its register map (regmap.py) and board
configurations (boards.py), generated headers from the numeric contract (gen_numerics.py),
the CPU builds loaded with ctypes (csim.py) and the analytical cycle model (cycles.py)."""
