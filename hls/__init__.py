"""The training engine's side of e2t: generated C++ headers from the numeric contract
(and, with the engine issue, the HLS kernels, their CPU builds and the exporter)."""
