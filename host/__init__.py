"""Board side of e2t, in rooms by stage: plan/ (the network plan), engine/ (driver, emulated
overlay, session), train/ (the trainer and its steps, inference, config), data/ (data sets).

Runs with numpy (+ pynq on a board) alone: nothing under host/ may import torch,
because the PYNQ-Z2's 32-bit ARM has no PyTorch. Keep the syntax Python 3.10-clean.
"""
