"""Dataset plugins; importing this package registers them."""

from robcurve.data import cifar, corruptions, fashion_mnist, imagenet  # noqa: F401  (registration)
from robcurve.data.base import DATASETS, SampleSet, load_dataset

__all__ = ["DATASETS", "SampleSet", "load_dataset"]
