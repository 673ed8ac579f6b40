"""The numeric contract: the floor every side imports, and that imports nothing else of ours.

Number formats and the fixed-point arithmetic (numerics, with parallel), the engine's register map
and its JSON (regmap), board data (boards), operation counts and their phases (opcount), run folders
and atomic writes (runs), the workstation-backend seam (backends), errors and JSON files. Board
side: plain Python and numpy, Python 3.10-clean, never torch (ARCHITECTURE.md, layer 1).
"""
