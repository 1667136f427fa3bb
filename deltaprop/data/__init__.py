"""Data: MNIST (IDX files, lookup and download), batch loading, normalisation, digit pictures."""
from .idx import parse_idx, read_idx, write_idx
from .loader import (MNIST_MEAN, MNIST_STD, DataLoader, default_preprocess, preprocess, scale01, standardize,
                     train_val_split)
from .mnist import download_mnist, find_mnist, load_mnist

__all__ = ["parse_idx", "read_idx", "write_idx", "DataLoader", "train_val_split", "scale01", "standardize",
           "preprocess", "default_preprocess", "MNIST_MEAN", "MNIST_STD", "load_mnist", "find_mnist",
           "download_mnist"]
