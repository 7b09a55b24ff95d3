"""The fastnn model file: save_model / load_model, save_weights / load_weights.

Format (version 1): a ZIP archive holding
    fastnn.json       {"format": "fastnn-model" | "fastnn-weights", "version": 1,
                       "model": <Sequential.get_config()>, "compile": {"loss": ...,
                       "metrics": [...]} or null, "optimizer": {"class", "config",
                       "iterations"} or null, "n_weights": N, "n_optimizer": M}
    weights/<i>.npy   the i-th weight array (model.get_weights() order), NumPy .npy
    optimizer/<i>.npy the i-th optimizer state array (optimizer.variables order)

Arrays are read with allow_pickle=False and the JSON holds only plain data, so loading
a file never runs code from it.  Files are written to a temporary file in the same
directory and renamed over the target, so a crash mid-save leaves the previous file intact.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from fastnn import losses, optimizers

VERSION = 1
_MAX_JSON = 16 << 20


def _write_atomic(filepath, entries):
    """Write {name: bytes} as a ZIP to filepath via a temporary file and rename."""
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                for name, data in entries:
                    z.writestr(name, data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, filepath)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npy(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _entries(meta, weights, opt_vars):
    yield "fastnn.json", json.dumps(meta, indent=1).encode()
    for i, w in enumerate(weights):
        yield f"weights/{i}.npy", _npy(w)
    for i, v in enumerate(opt_vars):
        yield f"optimizer/{i}.npy", _npy(v)


def save_model(model, filepath):
    if not model.built:
        raise ValueError("Expected a built model to save. Build it (or fit it) first.")
    meta = {"format": "fastnn-model", "version": VERSION, "model": model.get_config(),
            "compile": None, "optimizer": None}
    opt_vars = []
    if model.compiled:
        meta["compile"] = model.get_compile_config()
        meta["optimizer"] = optimizers.serialize(model.optimizer)
        opt_vars = model.optimizer.variables
    meta["n_weights"], meta["n_optimizer"] = len(model.weights), len(opt_vars)
    _write_atomic(filepath, _entries(meta, model.weights, opt_vars))


def save_weights(model, filepath):
    if not model.built:
        raise ValueError("Expected a built model to save weights from.")
    meta = {"format": "fastnn-weights", "version": VERSION, "n_weights": len(model.weights),
            "n_optimizer": 0}
    _write_atomic(filepath, _entries(meta, model.weights, []))


class _Reader:
    """Checked access to a fastnn file: clear errors for anything that is not one."""

    def __init__(self, filepath):
        self.path = os.fspath(filepath)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No fastnn model file at {self.path!r}")
        try:
            self.zip = zipfile.ZipFile(self.path)
            info = self.zip.getinfo("fastnn.json")
            if info.file_size > _MAX_JSON:
                raise ValueError("its fastnn.json is implausibly large")
            self.meta = json.loads(self.zip.read(info).decode())
        except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError, OSError,
                EOFError, ValueError) as e:
            raise ValueError(f"{self.path!r} is not a readable fastnn model file "
                             f"(truncated, corrupted or another format): {e}") from None
        if not isinstance(self.meta, dict) or not str(self.meta.get("format", "")).startswith("fastnn-"):
            raise ValueError(f"{self.path!r} is not a fastnn model file (no fastnn format tag).")
        if self.meta.get("version") != VERSION:
            raise ValueError(f"{self.path!r} has fastnn file format version "
                             f"{self.meta.get('version')!r}; this fastnn reads version {VERSION}.")

    def arrays(self, group, count):
        out = []
        for i in range(int(count)):
            try:
                with self.zip.open(f"{group}/{i}.npy") as f:
                    out.append(np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False))
            except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError) as e:
                raise ValueError(f"{self.path!r}: cannot read {group}/{i}.npy safely "
                                 f"(missing, corrupted or holding Python objects): {e}") from None
            if out[-1].dtype.kind != "f":
                raise ValueError(f"{self.path!r}: {group}/{i}.npy holds {out[-1].dtype}, "
                                 "expected floats")
        return out

    def close(self):
        self.zip.close()


def load_model(filepath, model_cls):
    r = _Reader(filepath)
    try:
        meta = r.meta
        if meta["format"] != "fastnn-model":
            raise ValueError(f"{r.path!r} holds only weights; build the model and call "
                             "model.load_weights() instead.")
        try:
            model = model_cls.from_config(meta["model"])
            if not model.built:
                model.build()
        except (KeyError, TypeError) as e:
            raise ValueError(f"{r.path!r}: invalid model description: {e}") from None
        model.set_weights(r.arrays("weights", meta["n_weights"]))
        if meta.get("compile"):
            model.compile(optimizer=optimizers.deserialize(meta["optimizer"]),
                          loss=losses.from_config(meta["compile"]["loss"]),
                          metrics=meta["compile"]["metrics"])
            variables = r.arrays("optimizer", meta.get("n_optimizer", 0))
            if variables:
                mine = model.build_optimizer()
                if len(mine) != len(variables) or any(a.shape != b.shape for a, b in zip(mine, variables)):
                    raise ValueError(f"{r.path!r}: optimizer state does not match the model")
                for a, b in zip(mine, variables):
                    a[...] = b
        return model
    finally:
        r.close()


def load_weights(model, filepath):
    r = _Reader(filepath)
    try:
        model.set_weights(r.arrays("weights", r.meta["n_weights"]))
    finally:
        r.close()
