"""Data sets: the built-in ones and CIFAR (datasets), image folders (folderdata)."""
