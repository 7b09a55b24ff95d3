"""Models, named as in `keras.models`: Sequential, and load_model.

Sequential is the Keras API of a model's structure, configuration and files; compile, fit,
evaluate and predict come from its base class `fastnn.trainer.Trainer` (as keras.Model's come
from Keras' Trainer).  What a training step does, and which step runs (one compiled call into
C for a stack of Dense layers, else layer by layer), is fastnn/_step.py's; the file format is
fastnn/saving.py's.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence, cast

import numpy as np

from fastnn import _step, config, export, keras_format, saving, utils
from fastnn.layers import LAYERS, InputLayer, Layer, _batch_shape, build_all
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

    A Sequential may be added to another as one of its layers, as in Keras: `model.layers`
    lists it as one entry (summary shows it as one row), while training, prediction and the
    files see its layers in order, in the outer model's one parameter buffer; the inner model
    keeps views of its share, so it predicts and trains the same weights on its own too.

    A model pickles (`pickle`, `copy.deepcopy`) whole, as Keras' pickling through its file
    format: layers, weights, compile settings, optimizer state, and fastnn's random state, so
    a copy trains on exactly as the original would.

    Args:
        layers: optional list of layers to add (default None: none yet).
        name: the model's name (default None: "sequential", "sequential_1", ...).
        seed: int or None (the default).  Seeds this model's weight initialisation,
            shuffling and dropout; None draws one from fastnn's seed source (see
            `fastnn.utils.set_random_seed`).
    """

    def __init__(self, layers: Sequence[Layer | Sequential] | None = None,
                 name: str | None = None, seed: int | None = None) -> None:
        super().__init__(seed)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected name to be a str. Received: {name!r}")
        count = Layer._count["sequential"] = Layer._count.get("sequential", 0) + 1
        self.name = name or ("sequential" if count == 1 else f"sequential_{count - 1}")
        self._layers: list[Layer | Sequential] = []
        self._batch_size: int | None = None  # Input(batch_size=...): shown in the shapes only
        self._built_leaves: list[Layer] = []  # the layers the last build bound
        self.built = False
        for layer in layers or []:
            self.add(layer, build=False)
        if self._layers and self._input_shape is not None:
            self.build()  # once, for all the layers

    @property
    def layers(self) -> list[Layer | Sequential]:
        """The layers added (a new list: add() and pop() change the model)."""
        return list(self._layers)

    @layers.setter
    def layers(self, _: Any) -> None:
        raise AttributeError("`Sequential.layers` attribute is reserved and should not be used. "
                             "Use `add()` and `pop()` to change the layers in this model.")

    def _leaves(self) -> list[Layer]:
        """The layers a step runs, in order: nested Sequential models' layers in their place."""
        out: list[Layer] = []
        for layer in self._layers:
            if isinstance(layer, Sequential):
                if not layer._layers:
                    raise ValueError(f"Sequential model {layer.name} cannot be built because "
                                     "it has no layers. Call `model.add(layer)`.")
                out += layer._leaves()
            else:
                out.append(layer)
        return out

    def add(self, layer: Layer | Sequential, build: bool = True) -> None:
        """Append a layer (or set the input shape with `layers.Input(shape=...)`); with a known
        input shape the model is built again (build=False leaves that for later).  Layer names
        must be unique in the model (ValueError, as Keras)."""
        if isinstance(layer, InputLayer):
            if self._layers or self._input_shape is not None:
                raise ValueError("Expected Input(...) only as the first entry of a Sequential model. "
                                 f"Received it after {len(self._layers)} layers.")
            self._input_shape, self._batch_size = layer.input_shape, layer.batch_size
            return
        if not isinstance(layer, (Layer, Sequential)):
            raise TypeError(f"Expected a fastnn layer. Received: {layer!r} ({type(layer).__name__})")
        if any(l is layer for l in self._layers):
            raise ValueError(f"Layer {layer.name!r} is already in the model.")
        if isinstance(layer, Sequential) and (layer is self or self in layer._models()):
            raise ValueError(f"Expected a model other than {self.name!r} itself. Received: "
                             f"{layer.name!r}, which is or contains it.")
        if any(l.name == layer.name for l in self._layers):
            _duplicate(layer.name)
        self._append(layer, build)

    def _append(self, layer: Layer | Sequential, build: bool) -> None:
        """add() once the layer is known to fit in (checked)."""
        if not self._layers and self._input_shape is None:
            if isinstance(layer, Sequential):
                self._input_shape, self._batch_size = layer._input_shape, layer._batch_size
            else:
                self._input_shape = layer.input_shape
        self._layers.append(layer)
        self.built = False
        if build and self._input_shape is not None:
            self.build()

    def _models(self) -> list[Sequential]:
        """The Sequential models nested in this one, at any depth."""
        inner = [l for l in self._layers if isinstance(l, Sequential)]
        return inner + [m for l in inner for m in l._models()]

    def pop(self, rebuild: bool = True) -> Layer | Sequential:
        """Remove the last layer and return it, as Keras; the model is built again for its
        input shape, the remaining layers keeping their weights (rebuild=False, or no input
        shape: later).  IndexError on a model without layers (as Keras' list.pop; Keras
        also raises one when its last layer goes, fastnn leaves an empty model)."""
        if not self._layers:
            raise IndexError(f"pop from an empty Sequential model {self.name!r}: it has no layers.")
        layer = self._layers.pop()
        self.built = False
        if rebuild and self._layers and self._input_shape is not None:
            self.build()
        return layer

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create the weights.  input_shape includes the batch dimension, as in Keras:
        `model.build((None, 784))`; None (the default) builds for the input shape the model
        already has."""
        if not self._layers:
            raise ValueError(f"Sequential model {self.name} cannot be built because it has no "
                             "layers. Call `model.add(layer)`.")
        if input_shape is not None:
            batch, shape = _batch_shape("input_shape", input_shape)
            if self._input_shape is not None and shape != self._input_shape:
                raise ValueError(f"Expected input_shape {(None, *self._input_shape)}. "
                                 f"Received: {(None, *shape)}")
            self._input_shape = shape  # (the sample's shape)
            self._batch_size = batch if batch is not None else self._batch_size
        if self._input_shape is None:
            raise ValueError("The model has no input shape yet: give input_shape= to the first "
                             "layer, add layers.Input(shape=...), or call fit/build with data.")
        build_all(self._leaves(), self._input_shape, self._rng)  # all or nothing
        self.built = True
        self._pack_weights()  # (the optimizer state starts afresh: the parameters moved)

    def _pack_weights(self) -> None:
        """The trainer's one flat parameter buffer for all the layers (Trainer._pack_weights);
        nested models get views of their share."""
        super()._pack_weights()
        self._built_leaves = self._leaves()
        shape = cast("tuple[int, ...]", self._input_shape)
        for layer in self._layers:
            if isinstance(layer, Sequential):
                layer._share(shape)
                shape = layer._leaves()[-1].output_shape
            else:
                shape = layer.output_shape

    def _stale(self) -> bool:
        """Whether a nested model changed since this built model was built (layers added or
        removed, or built anew in a buffer of its own): fit, predict... then build it again."""
        if not self._models():
            return False
        leaves, buffers = self._leaves(), self._params + self._frozen
        return leaves != self._built_leaves or not all(
            any(np.may_share_memory(w, p) for p in buffers) for l in leaves for w in l.weights)

    def _share(self, input_shape: tuple[int, ...]) -> None:
        """Inside a built model: built too, for samples of input_shape, on views of the outer
        model's parameters (one per weight)."""
        if self._input_shape is None:
            self._input_shape = input_shape
        self.built = True
        leaves = self._built_leaves = self._leaves()
        weights = [(w.reshape(-1), g.reshape(-1), t) for l in leaves
                   for w, g, t in zip(l.weights, l.grads, l.weight_trainable())]
        self._params = [w for w, _, t in weights if t]
        self._grads = [g for _, g, t in weights if t]
        self._frozen = [w for w, _, t in weights if not t]
        self._packed_for = [l.weight_trainable() for l in leaves]
        self._trainer = None
        if self.optimizer is not None:
            self.optimizer.state = None
        for layer in self._layers:
            if isinstance(layer, Sequential):
                layer._share(input_shape)
            input_shape = (layer._leaves()[-1] if isinstance(layer, Sequential)
                           else layer).output_shape

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if self.built:  # the weights came as separate arrays: one buffer again (the
            kept = self.optimizer.state if self.optimizer is not None else None
            self._pack_weights()  # optimizer state stays: the same shapes, in the same order)
            if self.optimizer is not None:
                self.optimizer.state = kept

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        """The output shape for inputs of input_shape, batch dimension first (kept), as
        Keras: `compute_output_shape((None, 784))`; nothing is built."""
        batch, shape = _batch_shape("input_shape", input_shape)
        for layer in self._leaves():
            shape = layer.compute_output_shape(shape)
        return (batch, *shape)

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """(batch size or None, *the shape of one sample); AttributeError while unknown, as
        Keras."""
        if self._input_shape is None:
            raise AttributeError(f"Sequential model '{self.name}' has no defined input shape yet.")
        return (self._batch_size, *self._input_shape)

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """(batch size or None, *the shape of one output) of a built model; AttributeError
        before, as Keras."""
        if not self.built:
            raise AttributeError(f"Sequential model '{self.name}' has no defined output shape "
                                 "yet.")
        return (self._batch_size, *self._leaves()[-1].output_shape)

    @property
    def weights(self) -> list[NDArray[Any]]:
        """The weight arrays, layer by layer (views into the model's parameter buffer)."""
        return [w for l in self._leaves() for w in l.weights] if self.built else []

    @property
    def trainable(self) -> bool:
        """Whether any layer trains; setting it sets every layer's `trainable`, as in Keras
        (applied at the next compile())."""
        return any(l.trainable for l in self._layers) if self._layers else True

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for l in self._layers:
            l.trainable = value

    @property
    def trainable_weights(self) -> list[NDArray[Any]]:
        return [w for l in self._leaves() for w in l.trainable_weights] if self.built else []

    @property
    def non_trainable_weights(self) -> list[NDArray[Any]]:
        return [w for l in self._leaves() for w in l.non_trainable_weights] if self.built else []

    def count_params(self) -> int:
        """The number of weight values; ValueError on an unbuilt model, as Keras."""
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on layer '{self.name}', but the "
                             "layer isn't built. You can build it manually via: "
                             "`layer.build(input_shape)`.")
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
        """Keras' Sequential config: name, trainable, dtype, layers (each as Keras serializes
        it, {"module", "class_name", "config", "registered_name"}; an InputLayer first once
        the input shape is known) and, once built, build_input_shape; plus fastnn's seed.
        `Sequential.from_config(model.get_config())` makes a model of the same architecture
        (new weights)."""
        leaves = self._leaves() if self._layers else []
        dtype = leaves[0].dtype.name if leaves else config.floatx()
        entries = []
        if self._input_shape is not None:
            entries.append(_keras_entry("InputLayer", {
                "batch_shape": (self._batch_size, *self._input_shape), "dtype": dtype,
                "sparse": False, "ragged": False, "name": "input_layer", "optional": False}))
        entries += [_keras_entry(type(l).__name__, l.get_config()) for l in self._layers]
        cfg = {"name": self.name, "trainable": True, "dtype": dtype, "layers": entries,
               "seed": self.seed}
        if self.built:
            cfg["build_input_shape"] = self.input_shape
        return cfg

    def _file_config(self) -> dict[str, Any]:
        """The architecture as fastnn's file format writes it (fastnn/saving.py): name, seed,
        input_shape (the top model's only) and layers, each {"class", "config"}."""
        cfg: dict[str, Any] = {"name": self.name, "seed": self.seed}
        cfg["input_shape"] = list(self._input_shape) if self._input_shape else None
        cfg["layers"] = [{"class": "Sequential", "config": _nested(l._file_config())}
                         if isinstance(l, Sequential)
                         else {"class": type(l).__name__, "config": l.get_config()}
                         for l in self._layers]
        return cfg

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Self:
        """A new model of get_config()'s architecture (or of fastnn's file format's), built
        when its input shape is known."""
        if not isinstance(cfg, dict) or "layers" not in cfg:
            raise ValueError("A Sequential model configuration must be a dictionary containing "
                             f"the 'name' and 'layers' keys. Received: config={cfg!r}")
        if cfg.get("trainable", True) is not True:
            raise NotImplementedError("trainable=False (a frozen model) is not supported by "
                                      "this fastnn.")
        model = cls(name=cfg.get("name"), seed=cfg.get("seed"))
        if cfg.get("input_shape"):
            model._input_shape = tuple(cfg["input_shape"])
        names: set[str] = set()
        for entry in cfg["layers"]:
            kind = entry.get("class_name", entry.get("class"))
            layer: Layer | Sequential
            if kind == "Sequential":
                layer = cls.from_config(entry["config"])
            elif kind in LAYERS:
                layer = LAYERS[kind].from_config(entry["config"])
            else:
                raise ValueError(f"Unknown layer class {kind!r} in the saved model")
            if isinstance(layer, InputLayer):
                model.add(layer, build=False)
                continue
            if layer.name in names:
                _duplicate(layer.name)
            names.add(layer.name)
            model._append(layer, build=False)  # (new layers: add's other checks hold; its
            # name check would take time quadratic in the layers)
        if model._layers and model._input_shape is not None:
            model.build()
        elif cfg.get("build_input_shape"):
            model.build(cfg["build_input_shape"])
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


def _duplicate(name: str) -> NoReturn:
    raise ValueError("All layers added to a Sequential model should have unique names. "
                     f"Name '{name}' is already the name of a layer in this model. "
                     "Update the `name` argument to pass a unique name.")


def _keras_entry(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A layer in a Keras config, as keras.saving.serialize_keras_object writes it."""
    return {"module": "keras" if class_name == "Sequential" else "keras.layers",
            "class_name": class_name, "config": config, "registered_name": None}


def _nested(cfg: dict[str, Any]) -> dict[str, Any]:
    """A nested model's file config: its input shape is the outer model's business."""
    return {k: v for k, v in cfg.items() if k != "input_shape"}


def _keras_file(filepath: Any, suffix: str) -> bool:
    """Whether filepath (str, bytes or os.PathLike) names a file of Keras' format `suffix`."""
    try:
        return os.fsdecode(os.fspath(filepath)).endswith(suffix)
    except TypeError:
        return False  # not a path: the saving module says what it expects
