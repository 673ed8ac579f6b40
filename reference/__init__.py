"""Workstation side of e2t: the PyTorch reference trainer (CIFAR ResNets, checkpoints).

Imports torch; the board side (host/, energy/) never imports this package.
"""
