"""Datasets, named as in keras.datasets."""
from fastnn.datasets import mnist  # noqa: F401
