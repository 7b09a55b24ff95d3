"""The fastnn model file: save_model / load_model, save_weights / load_weights.

Format (version 1): a ZIP archive of stored (uncompressed, unencrypted) entries
    fastnn.json       {"format": "fastnn-model" | "fastnn-weights", "version": 1,
                       "model": <Sequential._file_config()>, "compile": {"loss": ...,
                       "metrics": [...]} or null, "optimizer": {"class", "config",
                       "iterations"} or null, "n_weights": N, "n_optimizer": M}
    weights/<i>.npy   the i-th weight array (model.get_weights() order), NumPy .npy
    optimizer/<i>.npy the i-th optimizer state array (optimizer.variables order)

Paths may be str, bytes or os.PathLike.  Saving writes a temporary file in the target's
directory (through a symlink: in its target's directory) and renames it over the target, so
a crash mid-save leaves the previous file intact; the temporary file is removed on any
exception, and on SIGTERM while the main thread writes.  Re-saving keeps the file's
permission mode.

Loading never runs code from the file (arrays are read without pickle, the JSON holds only
plain data) and reads only what the architecture implies: fastnn.json at most 16 MiB,
nested at most 32 deep, every value of the expected type; the architecture at most as many
parameters as the file can hold; every .npy entry at most its array's size plus a 4 KiB
header, checked before anything is read; headers read with bounded reads, their shape and
dtype checked before the data is read.  Hyper-parameters are checked by the optimizer and
schedule constructors, so a file gets the same refusal as a caller.

Errors: a missing file raises FileNotFoundError; anything wrong with the file itself
(not a ZIP, truncated, compressed or encrypted entries, oversized entries, malformed JSON,
wrong types or values in it, .npy headers or arrays that do not fit the model, NaN or Inf in
the optimizer state) raises `FileFormatError`, a ValueError whose message names the file and
what is wrong.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from fastnn import _files, distribution, losses, metrics as metrics_module, optimizers

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath
    from numpy.typing import NDArray

    from fastnn.models import Sequential

VERSION = 1
_MAX_JSON = 16 << 20      # bytes of fastnn.json
_MAX_DEPTH = 32           # nesting of fastnn.json (fastnn writes at most 7)
_NPY_HEADER = 4096        # allowance for a .npy entry's header (fastnn writes 128 bytes)
_MAX_LAYERS = 10_000      # building a Sequential model takes time quadratic in its layers


class FileFormatError(ValueError):
    """The file is not a valid fastnn file: unreadable, truncated, hostile, or describing a
    model or optimizer state that fastnn would refuse.  The message names the file and what
    is wrong with it."""


# ---- saving --------------------------------------------------------------------------------

def _write_zip(filepath: StrOrBytesPath, entries: Iterable[tuple[str, bytes]]) -> None:
    """Write (name, bytes) entries as a ZIP of stored entries, atomically (_files.write_atomic)."""
    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name, data in entries:
                z.writestr(name, data)
    _files.write_atomic(filepath, write)


def _npy(a: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _entries(meta: dict[str, Any], weights: Sequence[NDArray[Any]],
             opt_vars: Sequence[NDArray[Any]]) -> Iterator[tuple[str, bytes]]:
    yield "fastnn.json", json.dumps(meta, indent=1).encode()
    for i, w in enumerate(weights):
        yield f"weights/{i}.npy", _npy(w)
    for i, v in enumerate(opt_vars):
        yield f"optimizer/{i}.npy", _npy(v)


def save_model(model: Sequential, filepath: StrOrBytesPath,
               training_state: dict[str, Any] | None = None) -> None:
    """training_state: plain JSON data stored with the model under "training_state" (what
    callbacks.BackupAndRestore needs to resume; see load_training_state)."""
    if not distribution.is_primary():  # a distributed fit: rank 0 writes, the others not
        return
    if not model.built:
        raise ValueError("Expected a built model to save. Build it (or fit it) first.")
    meta: dict[str, Any] = {"format": "fastnn-model", "version": VERSION,
                            "model": model._file_config(), "compile": None, "optimizer": None}
    opt_vars: list[NDArray[Any]] = []
    if model.compiled:
        meta["compile"] = model.get_compile_config()
        meta["optimizer"] = optimizers.serialize(model.optimizer)
        opt_vars = _optimizer_state(model.optimizer)
    meta["n_weights"], meta["n_optimizer"] = len(model.weights), len(opt_vars)
    if training_state is not None:
        meta["training_state"] = training_state
    _write_zip(filepath, _entries(meta, model.weights, opt_vars))


def compiled_metrics(saved: list[Any]) -> list[str | metrics_module.Metric]:
    """Compiled metrics as get_compile_config wrote them: names stay names (compile resolves
    them against the loss), Keras-serialized objects become those objects."""
    return [m if isinstance(m, str) else metrics_module.deserialize(m) for m in saved]


def _optimizer_state(opt: optimizers.Optimizer) -> list[NDArray[Any]]:
    """Every state array of an optimizer, in the file's order: the rule's (`variables`), then
    the moving averages (use_ema), then the gradient accumulators."""
    return opt.variables + opt.moving_averages + opt.gradient_accumulators


def save_weights(model: Sequential, filepath: StrOrBytesPath) -> None:
    if not distribution.is_primary():
        return
    if not model.built:
        raise ValueError("Expected a built model to save weights from.")
    meta = {"format": "fastnn-weights", "version": VERSION, "n_weights": len(model.weights),
            "n_optimizer": 0}
    _write_zip(filepath, _entries(meta, model.weights, []))


# ---- loading -------------------------------------------------------------------------------

# What fastnn.json holds, by kind: a predicate on the parsed JSON value and its description.
# The layer config keys fastnn writes (a trailing "?": null allowed).  Other keys are left to
# the layer constructors, which refuse unknown ones, except the input shape, which only
# model.input_shape gives.
_LAYER_KEYS = {"name": "str?", "trainable": "bool", "dtype": "str?", "units": "int",
               "activation": "config", "use_bias": "bool", "kernel_initializer": "config",
               "bias_initializer": "config",
               "rate": "number", "seed": "int?"}
_NOT_LAYER_KEYS = ("input_shape", "shape")
# Everything loading may raise on a bad file, however it is bad.
_BAD = (zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError, OverflowError,
        RecursionError, MemoryError, SyntaxError, NotImplementedError, RuntimeError)


def _parameter_count(model_cfg: dict[str, Any], shape: list[int] | None = None
                     ) -> tuple[int, list[int]]:
    """How many parameters a (type-checked) model config describes, and its output shape,
    from the config alone so that nothing is allocated before the count is checked: only
    Dense layers have weights, a kernel (inputs, units) and a bias (units,); a nested
    Sequential's are counted with its input, the shape at its place (shape)."""
    shape, count = model_cfg["input_shape"] if shape is None else shape, 0
    for entry in model_cfg["layers"]:
        cfg = entry["config"]
        if entry["class"] == "Sequential":
            n, shape = _parameter_count(cfg, shape)
            count += n
        elif entry["class"] == "Flatten":
            shape = [math.prod(shape)]
        elif entry["class"] == "Dense" and type(cfg.get("units")) is int and cfg["units"] > 0:
            count += (math.prod(shape) + cfg.get("use_bias", True)) * cfg["units"]
            shape = [cfg["units"]]
    return count, shape


class _Reader(_files.BoundedZip):
    """Checked access to a fastnn file: FileFormatError for anything that is not one."""

    kind = "fastnn model file"
    error = FileFormatError

    def __init__(self, filepath: StrOrBytesPath) -> None:
        super().__init__(filepath)
        try:
            self.meta = self.read_json("fastnn.json", _MAX_JSON, _MAX_DEPTH)
            self._check_header()
        except BaseException:
            self.close()
            raise

    def _check_header(self) -> None:
        meta, path = self.meta, self.path
        if not isinstance(meta, dict) or meta.get("format") not in ("fastnn-model", "fastnn-weights"):
            raise FileFormatError(f"{path!r} is not a fastnn model file (no fastnn format tag).")
        if type(meta.get("version")) is not int or meta["version"] != VERSION:
            raise FileFormatError(f"{path!r} has fastnn file format version "
                                  f"{_files.short(meta.get('version'))}; this fastnn reads version "
                                  f"{VERSION}.")
        self.check(meta.get("n_weights"), "count", "n_weights")
        self.check(meta.get("n_optimizer", 0), "count", "n_optimizer")

    def check_model_config(self, cfg: Any, where: str = "model") -> Any:
        """The types of a Sequential config (nested ones' too), and a size the file can back;
        returns cfg."""
        self.check(cfg, "dict", where)
        self.check(cfg.get("name"), "str?", f"{where}.name")
        self.check(cfg.get("seed"), "int?", f"{where}.seed")
        if where == "model":
            self.check(cfg.get("input_shape"), "shape", "model.input_shape")
        elif "input_shape" in cfg:
            self.fail(f"{where}.input_shape: fastnn saves the input shape only as "
                      "model.input_shape.")
        entries = self.check(cfg.get("layers"), "list", f"{where}.layers")
        if len(entries) > _MAX_LAYERS:
            self.fail(f"Expected at most {_MAX_LAYERS} layers. Received: {len(entries)}")
        for i, entry in enumerate(entries):
            at = f"{where}.layers[{i}]"
            self.check(entry, "dict", at)
            self.check(entry.get("class"), "str", f"{at}.class")
            if entry["class"] == "Sequential":
                self.check_model_config(entry.get("config"), f"{at}.config")
                continue
            for key, value in self.check(entry.get("config"), "dict", f"{at}.config").items():
                if key in _LAYER_KEYS:
                    self.check(value, _LAYER_KEYS[key], f"{at}.config.{key}")
                elif key in _NOT_LAYER_KEYS:
                    self.fail(f"{at}.config.{key}: fastnn saves the input shape only as "
                              "model.input_shape.")
        if where != "model":
            return cfg
        count = _parameter_count(cfg)[0]
        if count * 4 > self.size:  # 4 bytes: the smallest float fastnn uses
            self.fail(f"its model has {count} parameters, more than its {self.size} bytes "
                      "can hold.")
        return cfg

    def check_compile_config(self, cfg: Any) -> None:
        self.check(cfg, "dict", "compile")
        self.check(cfg.get("loss"), "dict", "compile.loss")
        for key in ("metrics", "weighted_metrics"):
            for i, m in enumerate(self.check(cfg.get(key, []), "list", f"compile.{key}")):
                if not isinstance(m, str):  # a Keras-serialized metric object
                    self.check(m, "dict", f"compile.{key}[{i}]")
        lw = cfg.get("loss_weights")
        if lw is not None and (isinstance(lw, bool) or not isinstance(lw, (int, float, list))):
            self.fail(f"compile.loss_weights is {lw!r}; expected a number, a list or null.")

    def arrays(self, group: str, like: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
        """group/<i>.npy for every array of like, each checked to be a float array of that
        array's shape and dtype before its data is read."""
        return [self.array(f"{group}/{i}.npy", a) for i, a in enumerate(like)]

    def array(self, name: str, like: NDArray[Any]) -> NDArray[Any]:
        info = self.entry(name, like.nbytes + _NPY_HEADER)
        fmt = np.lib.format
        try:
            with self.zip.open(info) as f:
                version = fmt.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    self.fail(f"{name} is a .npy file of version {version}; expected 1.0 or 2.0.")
                # (Callable: NumPy < 2's stubs lack max_header_size)
                read_header: Callable[..., tuple[tuple[int, ...], bool, np.dtype[Any]]] = (
                    fmt.read_array_header_1_0 if version == (1, 0)
                    else fmt.read_array_header_2_0)
                shape, fortran, dtype = read_header(f, max_header_size=_NPY_HEADER)
                if dtype.hasobject:
                    self.fail(f"{name} holds Python objects; fastnn files hold only float arrays "
                              "and never run code from a file.")
                expected = f"Expected {name} to be a {like.dtype} array of shape {like.shape}"
                if dtype.kind != "f" or dtype.newbyteorder("=") != like.dtype:
                    self.fail(f"{expected}. Received: dtype {dtype}")
                if shape != like.shape:
                    self.fail(f"{expected}. Received: shape {shape}")
                data = f.read(like.nbytes)
                if len(data) != like.nbytes:
                    self.fail(f"{name} is truncated: {len(data)} of {like.nbytes} data bytes.")
                if f.read(1):  # (reading to the end also checks the entry's CRC)
                    self.fail(f"{name} has bytes after its {like.nbytes} data bytes.")
        except FileFormatError:
            raise
        except _BAD as e:
            self.fail(f"cannot read {name} safely (truncated or corrupted): {e}")
        return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def load_model(filepath: StrOrBytesPath, model_cls: type[Sequential]) -> Sequential:
    r = _Reader(filepath)
    try:
        meta = r.meta
        if meta["format"] != "fastnn-model":
            r.fail("it holds only weights; build the model and call model.load_weights() "
                   "instead.")
        cfg = r.check_model_config(meta.get("model"))
        try:
            # built once, at the end: layers added to a model with an input shape build it
            # each time (as many builds as layers)
            model = model_cls.from_config({**cfg, "input_shape": None})
            model.build((None, *cfg["input_shape"]))
        except _BAD as e:
            r.fail(f"invalid model description: {e}")
        model.set_weights(_weights(r, model))
        if meta.get("compile") is not None:
            r.check_compile_config(meta["compile"])
            try:
                model.compile(optimizer=optimizers.deserialize(meta.get("optimizer")),
                              loss=losses.from_config(meta["compile"]["loss"]),
                              loss_weights=meta["compile"].get("loss_weights"),
                              metrics=compiled_metrics(meta["compile"]["metrics"]),
                              weighted_metrics=compiled_metrics(
                                  meta["compile"].get("weighted_metrics", [])))
            except _BAD as e:
                r.fail(f"invalid optimizer or compile settings: {e}")
            if meta.get("n_optimizer", 0):
                model.build_optimizer()
                mine = _optimizer_state(model.optimizer)
                for a, b in zip(mine, _optimizer_variables(r, mine)):
                    a[...] = b
        return model
    finally:
        r.close()


def _optimizer_variables(r: _Reader, mine: list[NDArray[Any]]) -> list[NDArray[Any]]:
    """The file's optimizer state arrays for these (`_optimizer_state`), checked finite."""
    if len(mine) != r.meta.get("n_optimizer", 0):
        r.fail(f"it holds {r.meta.get('n_optimizer', 0)} optimizer state arrays; its "
               f"optimizer has {len(mine)}.")
    variables = r.arrays("optimizer", mine)
    for i, v in enumerate(variables):
        if not np.isfinite(v).all():
            r.fail(f"optimizer/{i}.npy holds NaN or Inf; training from it would produce NaN.")
    return variables


def _weights(r: _Reader, model: Sequential) -> list[NDArray[Any]]:
    """The file's weight arrays for this built model."""
    if r.meta["n_weights"] != len(model.weights):
        r.fail(f"it holds {r.meta['n_weights']} weight arrays; the model has "
               f"{len(model.weights)}.")
    return r.arrays("weights", model.weights)


def load_weights(model: Sequential, filepath: StrOrBytesPath) -> None:
    if not model.built:
        raise ValueError("Expected a built model before load_weights. Build it first.")
    r = _Reader(filepath)
    try:
        model.set_weights(_weights(r, model))
    finally:
        r.close()


def load_training_state(model: Sequential, filepath: StrOrBytesPath,
                        check: Callable[[Any], Any]) -> Any:
    """Restore a save_model file into this built, compiled model, all or nothing: its
    weights, its optimizer's state arrays, step count and (when neither is a schedule)
    learning rate.  `check(training_state)` (the file's "training_state", None if it has
    none) runs before anything is assigned and may raise; returns what it returns.  For
    callbacks.BackupAndRestore: the model must be the one that was saved."""
    if not model.built or not model.compiled:
        raise ValueError("Expected a built, compiled model to restore a training state into.")
    r = _Reader(filepath)
    try:
        if r.meta["format"] != "fastnn-model":
            r.fail("it holds only weights, not a training state.")
        weights = _weights(r, model)
        try:
            saved = optimizers.deserialize(r.meta.get("optimizer"))
        except _BAD as e:
            r.fail(f"invalid optimizer: {e}")
        opt = model.optimizer
        if type(saved) is not type(opt):
            r.fail(f"its optimizer is {type(saved).__name__}; the model's is "
                   f"{type(opt).__name__}.")
        if opt.state is None:
            model.build_optimizer()
        mine = _optimizer_state(opt)
        variables = _optimizer_variables(r, mine)
        result = check(r.meta.get("training_state"))
        model.set_weights(weights)
        for a, b in zip(mine, variables):
            a[...] = b
        opt.calls = saved.calls
        if saved.schedule is None and opt.schedule is None:
            opt.learning_rate = saved.learning_rate
        return result
    finally:
        r.close()
