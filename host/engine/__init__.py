"""The engine boundary: the PYNQ driver (driver), the emulated overlay with the same surface
(emulated) and the per-op session over either (session)."""
