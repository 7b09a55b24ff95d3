"""Models, named as in `keras.models`: Sequential, and load_model.

Sequential is the Keras API of a model's structure, configuration and files; compile, fit,
evaluate and predict come from its base class `fastnn.trainer.Trainer` (as keras.Model's come
from Keras' Trainer).  What a training step does, and which step runs (one compiled call into
C for a stack of Dense layers, else layer by layer), is fastnn/_step.py's; the file format is
fastnn/saving.py's.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

from fastnn import _step, export, keras_format, saving, utils
from fastnn.layers import LAYERS, InputLayer, Layer, build_all
from fastnn.trainer import Trainer

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath
    from numpy.typing import ArrayLike, NDArray
    from typing_extensions import Self


class Sequential(Trainer):
    """A linear stack of layers.

        model = Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                            layers.Dense(10, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, epochs=5, batch_size=128)

    Args:
        layers: optional list of layers to add (default None: none yet).
        name: the model's name (default None: "sequential").
        seed: int or None (the default).  Seeds this model's weight initialisation,
            shuffling and dropout; None draws one from fastnn's seed source (see
            `fastnn.utils.set_random_seed`).
    """

    def __init__(self, layers: Sequence[Layer] | None = None, name: str | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        self.name = name or "sequential"
        self.layers = []
        self.built = False
        for layer in layers or []:
            self.add(layer, build=False)
        if self.layers and self._input_shape is not None:
            self.build()  # once, for all the layers

    def add(self, layer: Layer, build: bool = True) -> None:
        """Append a layer (or set the input shape with `layers.Input(shape=...)`); with a known
        input shape the model is built again (build=False leaves that for later)."""
        if isinstance(layer, InputLayer):
            if self.layers or self._input_shape is not None:
                raise ValueError("Expected Input(...) only as the first entry of a Sequential model. "
                                 f"Received it after {len(self.layers)} layers.")
            self._input_shape = layer.input_shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Expected a fastnn layer. Received: {layer!r} ({type(layer).__name__})")
        if any(l is layer for l in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in the model.")
        if not self.layers and self._input_shape is None and layer.input_shape is not None:
            self._input_shape = layer.input_shape
        self.layers.append(layer)
        self.built = False
        if build and self._input_shape is not None:
            self.build()

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create the weights.  input_shape includes the batch dimension, as in Keras:
        `model.build((None, 784))`; None (the default) builds for the input shape the model
        already has."""
        if input_shape is not None:
            input_shape = tuple(input_shape)[1:]
            if self._input_shape is not None and input_shape != self._input_shape:
                raise ValueError(f"Expected input_shape {(None, *self._input_shape)}. "
                                 f"Received: {(None, *input_shape)}")
            self._input_shape = cast("tuple[int, ...]", input_shape)  # (the sample's shape)
        if self._input_shape is None:
            raise ValueError("The model has no input shape yet: give input_shape= to the first "
                             "layer, add layers.Input(shape=...), or call fit/build with data.")
        build_all(self.layers, self._input_shape, self._rng)  # all or nothing
        self.built = True
        self._pack_weights()

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self) -> tuple[int | None, ...] | None:
        return (None, *self.layers[-1].output_shape) if self.built else None

    @property
    def weights(self) -> list[NDArray[Any]]:
        """The weight arrays, layer by layer (views into the model's parameter buffer)."""
        return [w for l in self.layers for w in l.weights] if self.built else []

    @property
    def trainable(self) -> bool:
        """Whether any layer trains; setting it sets every layer's `trainable`, as in Keras
        (applied at the next compile())."""
        return any(l.trainable for l in self.layers) if self.layers else True

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for l in self.layers:
            l.trainable = value

    @property
    def trainable_weights(self) -> list[NDArray[Any]]:
        return [w for l in self.layers for w in l.trainable_weights] if self.built else []

    @property
    def non_trainable_weights(self) -> list[NDArray[Any]]:
        return [w for l in self.layers for w in l.non_trainable_weights] if self.built else []

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def get_weights(self) -> list[NDArray[Any]]:
        """Copies of every weight array, layer by layer."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Assign weights (as from get_weights) in place; shapes must match."""
        if not self.built:
            raise ValueError("Expected a built model before set_weights. Build it first.")
        mine = self.weights
        if len(weights) != len(mine):
            raise ValueError(f"Expected {len(mine)} weight arrays. Received: {len(weights)}")
        new = [np.asarray(v) for v in weights]
        for i, (w, v) in enumerate(zip(mine, new)):
            if v.shape != w.shape:
                raise ValueError(f"Expected weights[{i}] with shape {w.shape}. Received: {v.shape}")
        for w, v in zip(mine, new):  # checked first, so nothing is half-assigned
            w[...] = v

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print the layers, their output shapes and parameter counts (with print_fn, by
        default print)."""
        utils.print_summary(self, print_fn)


    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed,
                "input_shape": list(self._input_shape) if self._input_shape else None,
                "layers": [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Self:
        model = cls(name=cfg.get("name"), seed=cfg.get("seed"))
        if cfg.get("input_shape"):
            model._input_shape = tuple(cfg["input_shape"])
        for entry in cfg["layers"]:
            if entry.get("class") not in LAYERS:
                raise ValueError(f"Unknown layer class {entry.get('class')!r} in the saved model")
            model.add(LAYERS[entry["class"]].from_config(entry["config"]))
        return model

    def save(self, filepath: StrOrBytesPath) -> None:
        """Save architecture, weights, compile settings and optimizer state to one file,
        atomically: `.keras` in Keras 3's own format (real Keras opens it; needs h5py, see
        fastnn/keras_format.py), any other name in fastnn's (see fastnn/saving.py)."""
        if _keras_file(filepath, ".keras"):
            return keras_format.save_keras(self, filepath)
        saving.save_model(self, filepath)

    def save_weights(self, filepath: StrOrBytesPath) -> None:
        """Save only the weight arrays (atomically); `.weights.h5` in Keras 3's layout."""
        if _keras_file(filepath, ".weights.h5"):
            return keras_format.save_weights_h5(self, filepath)
        saving.save_weights(self, filepath)

    def load_weights(self, filepath: StrOrBytesPath) -> None:
        """Load weights saved by save_weights (or save) into this built model."""
        if _keras_file(filepath, ".weights.h5"):
            return keras_format.load_weights_h5(self, filepath)
        saving.load_weights(self, filepath)

    def export(self, filepath: StrOrBytesPath, format: str = "onnx",
               verbose: bool = False) -> None:
        """Export the model for inference in other runtimes, as Keras 3's model.export:
        format="onnx" (the default and only one) writes an ONNX file (needs `pip install
        onnx`; see fastnn/export.py); verbose=True (default False) prints where it went."""
        export.export(self, filepath, format, verbose)


def load_model(filepath: StrOrBytesPath, compile: bool = True) -> Sequential:
    """Load a model written by `model.save(filepath)`, or a `.keras` file written by Keras 3
    (compile=False leaves it uncompiled; default True); never executes code from the file."""
    if _keras_file(filepath, ".keras"):
        model: Sequential = keras_format.load_keras(filepath, compile=compile)
        return model
    return saving.load_model(filepath, Sequential)


def _keras_file(filepath: Any, suffix: str) -> bool:
    """Whether filepath (str, bytes or os.PathLike) names a file of Keras' format `suffix`."""
    try:
        return os.fsdecode(os.fspath(filepath)).endswith(suffix)
    except TypeError:
        return False  # not a path: the saving module says what it expects
