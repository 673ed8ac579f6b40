"""The networks both sides build by name: the CIFAR ResNets of depth 6n + 2 (the plan builder
on the board, the PyTorch reference on the workstation, and the training config's check)."""

MODELS = ("resnet8", "resnet20", "resnet38", "resnet74", "resnet110")
