"""Board side of e2t: data sets, run folders and (later) the PYNQ engine driver.

Runs with numpy (+ pynq on a board) alone: nothing under host/ may import torch,
because the PYNQ-Z2's 32-bit ARM has no PyTorch. Keep the syntax Python 3.10-clean.
"""
