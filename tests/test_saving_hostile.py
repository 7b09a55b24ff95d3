"""Hostile and malformed fastnn files, poisoned hyper-parameters, and the details of saving.

Every bad file must raise saving.FileFormatError (a ValueError) naming the file, quickly and
without allocating what the file claims; see the module docstring of fastnn/saving.py."""
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from fastnn import layers, models, optimizers
from fastnn.saving import FileFormatError
from conftest import blobs, tiny_model


def _trained(path, optimizer=None):
    """Save a trained model (with optimizer state) covering every layer class to path."""
    x, y, _ = blobs(n=16)
    m = models.Sequential([layers.Input((5,)), layers.Dense(6, activation="relu"),
                           layers.Dropout(0.25, seed=3), layers.Activation("tanh"),
                           layers.Flatten(), layers.Dense(3, activation="softmax")], seed=0)
    sched = optimizers.schedules.PiecewiseConstantDecay([2, 5], [0.01, 0.005, 0.001])
    m.compile(optimizer=optimizer or optimizers.Adam(sched, amsgrad=True),
              loss="categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    m.save(path)
    return m


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.fastnn"
    _trained(path)
    return path


def _rewrite(src, dst, edit=lambda name, data: data, compression=zipfile.ZIP_STORED):
    """Copy the ZIP src to dst, entry by entry through edit(name, data) (None drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)
    return dst


def _edit_meta(src, dst, change):
    """Copy src to dst with change(meta) applied to its parsed fastnn.json."""
    def edit(name, data):
        if name != "fastnn.json":
            return data
        meta = json.loads(data)
        change(meta)
        return json.dumps(meta).encode()
    return _rewrite(src, dst, edit)


def _set_header_field(data, name, offsets, value):
    """Set a 2-byte field of entry name in both its ZIP headers (local, central directory):
    offsets = (offset in the local header, offset in the central one)."""
    out = bytearray(data)
    for sig, off, name_len_at, name_at in ((b"PK\x03\x04", offsets[0], 26, 30),
                                          (b"PK\x01\x02", offsets[1], 28, 46)):
        i, hits = out.find(sig), 0
        while i >= 0:
            n = struct.unpack_from("<H", out, i + name_len_at)[0]
            if out[i + name_at:i + name_at + n] == name.encode():
                struct.pack_into("<H", out, i + off, value)
                hits += 1
            i = out.find(sig, i + 1)
        assert hits == 1
    return bytes(out)


def _refused(path, *words):
    """load_model(path) raises FileFormatError naming the file and each of words."""
    with pytest.raises(FileFormatError) as e:
        models.load_model(path)
    for w in (str(path),) + words:
        assert w in str(e.value), (w, str(e.value))
    return str(e.value)


def _npy_header(shape, dtype="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                                "shape": shape})
    return buf.getvalue()


# ---- 1. zip bombs: refused from the ZIP and .npy headers, before anything big is read -------

def _quick_and_small(load):
    """Run load, which must raise FileFormatError: (seconds, peak bytes allocated, message)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(FileFormatError) as e:
            load()
        return time.perf_counter() - t, tracemalloc.get_traced_memory()[1], str(e.value)
    finally:
        tracemalloc.stop()


def test_deflated_bomb_entry_is_refused_unread(saved, tmp_path):
    bomb = tmp_path / "bomb.fastnn"
    n = 100 << 20  # 100 MB of zeros, deflated to about 100 KB
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(bomb, "w") as zout:
        for item in zin.infolist():
            if item.filename != "weights/0.npy":
                zout.writestr(item.filename, zin.read(item.filename))
                continue
            info = zipfile.ZipInfo(item.filename)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(info, "w", force_zip64=True) as f:
                f.write(_npy_header((n // 4,)))
                chunk = bytes(1 << 20)
                for _ in range(n >> 20):
                    f.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bomb))
    assert "weights/0.npy" in message and "compressed" in message
    assert seconds < 1 and peak < 4 << 20, (seconds, peak)


def test_declared_huge_npy_shape_is_refused_without_allocating(saved, tmp_path):
    # a stored entry of 140 bytes whose header claims 4 TiB of floats
    bad = _rewrite(saved, tmp_path / "huge.fastnn", lambda name, data: _npy_header((2**40,)) + bytes(12)
                   if name == "weights/0.npy" else data)
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bad))
    assert "weights/0.npy" in message and "(1099511627776,)" in message and "(5, 6)" in message
    assert seconds < 1 and peak < 4 << 20, (seconds, peak)
    # the same for load_weights, and for the optimizer state
    m = models.load_model(saved)
    seconds, peak, message = _quick_and_small(lambda: m.load_weights(bad))
    assert peak < 4 << 20 and str(bad) in message
    bad = _rewrite(saved, tmp_path / "huge_opt.fastnn", lambda name, data: _npy_header((2**40,)) + bytes(12)
                   if name == "optimizer/0.npy" else data)
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bad))
    assert "optimizer/0.npy" in message and peak < 4 << 20


def test_entries_larger_than_the_architecture_implies_are_refused_unread(saved, tmp_path):
    # weights/1.npy is the bias of Dense(6): 24 bytes of data; here valid, followed by 1 MiB
    def edit(name, data):
        return data + bytes(1 << 20) if name == "weights/1.npy" else data
    bad = _rewrite(saved, tmp_path / "big.fastnn", edit)
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bad))
    assert "weights/1.npy" in message and str(24 + 4096) in message and peak < 1 << 20
    # fastnn.json: at most 16 MiB
    big = _rewrite(saved, tmp_path / "bigjson.fastnn", lambda name, data: data + b" " * (16 << 20)
                   if name == "fastnn.json" else data)
    _refused(big, "fastnn.json")


def test_an_architecture_larger_than_the_file_is_refused_before_building(saved, tmp_path):
    def huge(meta):  # Dense(2**20) after Dense(2**20): 2**40 parameters from a 3 KB file
        meta["model"]["layers"][0]["config"]["units"] = 2**20
        meta["model"]["layers"][4]["config"]["units"] = 2**20
    bad = _edit_meta(saved, tmp_path / "arch.fastnn", huge)
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bad))
    assert "parameters" in message and peak < 4 << 20


def test_many_layers_build_once_and_too_many_are_refused(tmp_path):
    # 2000 Dense layers: built once (5.8 s before, layer after layer rebuilding the model)
    m = models.Sequential([layers.Dense(4) for _ in range(2000)], seed=0)
    m.build((None, 4))
    m.save(tmp_path / "deep.fastnn")
    t = time.perf_counter()
    m2 = models.load_model(tmp_path / "deep.fastnn")
    assert time.perf_counter() - t < 2
    np.testing.assert_array_equal(m2.get_weights()[-2], m.get_weights()[-2])
    # 10001 layers of a few bytes each: refused before anything is built
    bad = _edit_meta(tmp_path / "deep.fastnn", tmp_path / "many.fastnn", lambda meta: meta["model"].update(
        layers=[{"class": "Flatten", "config": {}}] * 10001))
    seconds, peak, message = _quick_and_small(lambda: models.load_model(bad))
    assert "10001" in message and seconds < 1


def test_layer_configs_do_not_carry_an_input_shape(saved, tmp_path):
    # fastnn writes the input shape only as model.input_shape; a layer's would rebuild the
    # model at every layer, or an InputLayer entry (which needs a shape) would
    for key, value in (("input_shape", [5]), ("shape", [5])):
        bad = _edit_meta(saved, tmp_path / "bad.fastnn",
                         lambda meta: meta["model"]["layers"][0]["config"].update({key: value}))
        _refused(bad, key, "model.input_shape")


# ---- 2. one documented error for every bad file ----------------------------------------------

def test_file_format_error_is_a_documented_value_error():
    from fastnn import saving
    assert issubclass(FileFormatError, ValueError)
    assert "FileFormatError" in saving.__doc__


def test_compressed_and_encrypted_entries_are_refused(saved, tmp_path):
    # deflate, which zipfile reads (fastnn never writes it)
    _refused(_rewrite(saved, tmp_path / "deflated.fastnn", compression=zipfile.ZIP_DEFLATED),
             "compressed")
    data = saved.read_bytes()
    for name in ("fastnn.json", "weights/0.npy"):
        # a compression method zipfile does not know (NotImplementedError before)
        (tmp_path / "m99").write_bytes(_set_header_field(data, name, (8, 10), 99))
        _refused(tmp_path / "m99", name, "compressed", "99")
        # the encrypted flag bit (RuntimeError before)
        (tmp_path / "enc").write_bytes(_set_header_field(data, name, (6, 8), 0x1))
        _refused(tmp_path / "enc", name, "encrypted")


def test_deeply_nested_json_is_refused(saved, tmp_path):
    deep = _rewrite(saved, tmp_path / "deep.fastnn", lambda name, data: b"[" * 100000 + b"]" * 100000
                    if name == "fastnn.json" else data)
    _refused(deep, "nested")   # RecursionError before

    def nest(meta):  # 40 deep, well below Python's recursion limit, inside a valid file
        value = 1
        for _ in range(40):
            value = [value]
        meta["model"]["layers"][0]["config"]["extra"] = value
    _refused(_edit_meta(saved, tmp_path / "nest.fastnn", nest), "nested")


def test_values_not_ints_where_ints_belong_are_refused(saved, tmp_path):
    for where, value in [("n_weights", float("inf")), ("n_weights", float("nan")),  # OverflowError before
                         ("n_weights", 1e30), ("n_weights", "5"), ("n_weights", -1),
                         ("input_shape", [float("inf")]), ("input_shape", [1e30]),
                         ("units", 1e30), ("units", float("nan"))]:
        def change(meta):
            if where == "n_weights":
                meta["n_weights"] = value
            elif where == "input_shape":
                meta["model"]["input_shape"] = value
            else:
                meta["model"]["layers"][0]["config"]["units"] = value
        _refused(_edit_meta(saved, tmp_path / "bad.fastnn", change), where)


def test_arrays_that_do_not_fit_the_model_are_refused(saved, tmp_path):
    cases = {
        "int": np.zeros((5, 6), np.int32),
        "float64": np.zeros((5, 6), np.float64),
        "shape": np.zeros((6, 5), np.float32),
        "bool": np.zeros((5, 6), bool),
    }
    for what, array in cases.items():
        buf = io.BytesIO()
        np.save(buf, array)
        bad = _rewrite(saved, tmp_path / f"{what}.fastnn",
                       lambda name, data: buf.getvalue() if name == "weights/0.npy" else data)
        message = _refused(bad, "weights/0.npy")
        assert ("(6, 5)" in message) if what == "shape" else (str(array.dtype) in message)
    # a truncated .npy (its CRC adjusted: the ZIP itself is sound)
    short = _rewrite(saved, tmp_path / "short.fastnn", lambda name, data: data[:-4]
                     if name == "weights/0.npy" else data)
    _refused(short, "weights/0.npy")
    missing = _rewrite(saved, tmp_path / "missing.fastnn", lambda name, data: None
                       if name == "optimizer/2.npy" else data)
    _refused(missing, "optimizer/2.npy")


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into parsed JSON, containers included."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


_HOSTILE = [None, True, -1, 0, 2**70, 1e30, float("nan"), float("-inf"), "x", [], {}, [1.5], {"a": 1}]


def test_any_wrong_value_anywhere_in_the_json_gives_file_format_error(saved, tmp_path):
    """Replace every value of fastnn.json (leaves and containers) by each hostile value, and
    delete every key: each file loads or raises FileFormatError naming the file, never
    another exception (AttributeError, KeyError, TypeError, OverflowError, ... before)."""
    with zipfile.ZipFile(saved) as z:
        meta = json.loads(z.read("fastnn.json"))
        others = {n: z.read(n) for n in z.namelist() if n != "fastnn.json"}
    bad = tmp_path / "bad.fastnn"
    outcomes = {"loaded": 0, "refused": 0}

    def attempt(edited):
        bad.unlink(missing_ok=True)  # (truncating a file can cost milliseconds; unlinking not)
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr("fastnn.json", json.dumps(edited))
            for n, d in others.items():
                z.writestr(n, d)
        try:
            models.load_model(bad)
            outcomes["loaded"] += 1
        except FileFormatError as e:
            assert str(bad) in str(e)
            outcomes["refused"] += 1

    for path in list(_paths(meta)):
        for value in _HOSTILE + ["delete"]:
            edited = json.loads(json.dumps(meta))
            if not path:
                if value == "delete":
                    continue
                edited = value
            else:
                parent = edited
                for k in path[:-1]:
                    parent = parent[k]
                if value != "delete":
                    parent[path[-1]] = value
                elif isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            attempt(edited)
    assert outcomes["refused"] > 500 and outcomes["loaded"] > 20, outcomes


def test_corrupted_and_truncated_bytes_give_file_format_error(saved, tmp_path):
    """Truncations at every 7th length and 400 random byte corruptions: each file loads (a
    change the format ignores) or raises FileFormatError, never anything else."""
    data = saved.read_bytes()
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.fastnn"
    variants = [data[:n] for n in range(0, len(data), 7)]
    for _ in range(400):
        b = bytearray(data)
        for i in rng.integers(0, len(b), rng.integers(1, 4)):
            b[i] = rng.integers(0, 256)
        variants.append(bytes(b))
    for v in variants:
        bad.unlink(missing_ok=True)
        bad.write_bytes(v)
        try:
            models.load_model(bad)
        except FileFormatError:
            pass


def test_weights_file_given_to_load_model_and_missing_file(tmp_path):
    m = tiny_model(seed=0)
    m.save_weights(tmp_path / "w.fastnn")
    _refused(tmp_path / "w.fastnn", "load_weights")
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "nope.fastnn")
    with pytest.raises(FileFormatError, match="4 weight arrays; the model has 2"):
        models.Sequential([layers.Dense(3, input_shape=(5,))]).load_weights(tmp_path / "w.fastnn")


# ---- 3. files that parse but would poison training ------------------------------------------

def _opt(meta):
    return meta["optimizer"]["config"]


def _sched(meta):
    return meta["optimizer"]["config"]["learning_rate"]["config"]


_POISON = [
    ("learning_rate", lambda m: _opt(m).update(learning_rate=float("nan"))),
    ("learning_rate", lambda m: _opt(m).update(learning_rate=float("inf"))),
    ("learning_rate", lambda m: _opt(m).update(learning_rate=-0.1)),
    ("values[1]", lambda m: _sched(m)["values"].__setitem__(1, float("nan"))),
    ("values[0]", lambda m: _sched(m)["values"].__setitem__(0, -0.01)),
    ("boundaries", lambda m: _sched(m).update(boundaries=[5, 2])),
    ("boundaries", lambda m: _sched(m).update(boundaries=[2, 2])),
    ("boundaries", lambda m: _sched(m).update(boundaries=[2, float("nan")])),
    ("iterations", lambda m: m["optimizer"].update(iterations=-1)),
    ("iterations", lambda m: m["optimizer"].update(iterations=2.5)),
    ("iterations", lambda m: m["optimizer"].update(iterations="4")),
    ("iterations", lambda m: m["optimizer"].update(iterations=True)),
    ("iterations", lambda m: m["optimizer"].update(iterations=2**63)),  # the kernels' int64
    ("weight_decay", lambda m: _opt(m).update(weight_decay=float("nan"))),
    ("weight_decay", lambda m: _opt(m).update(weight_decay=-0.004)),
    ("epsilon", lambda m: _opt(m).update(epsilon=0.0)),
    ("epsilon", lambda m: _opt(m).update(epsilon=-1e-7)),
    ("beta_1", lambda m: _opt(m).update(beta_1=1.0)),
    ("beta_2", lambda m: _opt(m).update(beta_2=-0.1)),
    ("beta_1", lambda m: _opt(m).update(beta_1=float("nan"))),
    ("amsgrad", lambda m: _opt(m).update(amsgrad="yes")),
    ("dtype", lambda m: m["model"]["layers"][0]["config"].update(dtype="int8")),
    ("dtype", lambda m: m["model"]["layers"][4]["config"].update(dtype="float16")),
]


@pytest.mark.parametrize("arg, change", _POISON, ids=[f"{a}-{i}" for i, (a, _) in enumerate(_POISON)])
def test_poisoned_hyper_parameters_are_refused_at_load(saved, tmp_path, arg, change):
    _refused(_edit_meta(saved, tmp_path / "poison.fastnn", change), arg)


@pytest.mark.parametrize("schedule", ["ExponentialDecay", "InverseTimeDecay"])
@pytest.mark.parametrize("arg, value", [("initial_learning_rate", float("nan")),
                                        ("initial_learning_rate", -0.1),
                                        ("decay_rate", float("nan")), ("decay_rate", -0.5),
                                        ("decay_steps", 0), ("decay_steps", -3),
                                        ("decay_steps", float("nan")), ("staircase", "no")])
def test_poisoned_decay_schedules_are_refused_at_load(tmp_path, schedule, arg, value):
    sched = getattr(optimizers.schedules, schedule)(0.1, decay_steps=3, decay_rate=0.5)
    path = tmp_path / "m.fastnn"
    _trained(path, optimizers.SGD(sched, momentum=0.9))
    _refused(_edit_meta(path, tmp_path / "poison.fastnn", lambda m: _sched(m).update({arg: value})), arg)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_optimizer_state_with_nan_or_inf_is_refused(saved, tmp_path, value):
    def edit(name, data):
        if name != "optimizer/1.npy":
            return data
        a = np.load(io.BytesIO(data))
        a.flat[3] = value
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()
    _refused(_rewrite(saved, tmp_path / "nan.fastnn", edit), "optimizer/1.npy", "NaN or Inf")


def test_constructors_refuse_what_a_file_is_refused_for():
    s = optimizers.schedules
    bad = [(lambda: s.ExponentialDecay(float("nan"), 10, 0.5), "initial_learning_rate"),
           (lambda: s.ExponentialDecay(-0.1, 10, 0.5), "initial_learning_rate"),
           (lambda: s.InverseTimeDecay(0.1, 10, float("inf")), "decay_rate"),
           (lambda: s.InverseTimeDecay(0.1, float("nan"), 0.5), "decay_steps"),
           (lambda: s.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
           (lambda: s.PiecewiseConstantDecay([10, 10], [0.1, 0.01, 0.001]), "boundaries"),
           (lambda: s.PiecewiseConstantDecay([10, 5], [0.1, 0.01, 0.001]), "boundaries"),
           (lambda: s.PiecewiseConstantDecay([10], [0.1, float("nan")]), "values[1]"),
           (lambda: s.PiecewiseConstantDecay([10], [-0.1, 0.01]), "values[0]"),
           (lambda: layers.Dense(3, dtype="int8"), "dtype"),
           (lambda: layers.Dropout(0.5, dtype="float16"), "dtype")]
    for make, arg in bad:
        with pytest.raises(ValueError, match=f"Expected {arg.replace('[', '.').replace(']', '.')}"):
            make()
    with pytest.raises(TypeError, match="boundaries"):
        s.PiecewiseConstantDecay(10, [0.1, 0.01])
    with pytest.raises(ValueError, match="iterations"):
        optimizers.deserialize({"class": "SGD", "config": {}, "iterations": -1})
    # what stays accepted
    assert s.PiecewiseConstantDecay((1, 2.5), [0.1, 0, 0.01])(2) == 0
    assert layers.Dense(3, dtype=np.float64).dtype == np.float64


# ---- 4. save details -------------------------------------------------------------------------

def test_resave_keeps_the_file_mode_and_new_files_follow_the_umask(tmp_path):
    path = tmp_path / "m.fastnn"
    old = os.umask(0o027)
    try:
        tiny_model(seed=0).save(path)
        assert path.stat().st_mode & 0o777 == 0o640
        path.chmod(0o600)
        tiny_model(seed=1).save(path)
        assert path.stat().st_mode & 0o777 == 0o600
        path.chmod(0o664)
        tiny_model(seed=1).save_weights(path)
        assert path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.fastnn"
    link = tmp_path / "link.fastnn"
    tiny_model(seed=0).save(target)
    link.symlink_to(target)
    m = tiny_model(seed=1)
    m.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(models.load_model(target).get_weights()[0], m.get_weights()[0])
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["m.fastnn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.fastnn", "real"]


class _BytesPath(os.PathLike):
    def __init__(self, p):
        self.p = os.fsencode(p)

    def __fspath__(self):
        return self.p


def test_bytes_and_pathlike_paths(tmp_path):
    m = tiny_model(seed=0)
    for path in (os.fsencode(tmp_path / "b.fastnn"), _BytesPath(tmp_path / "p.fastnn")):
        m.save(path)
        np.testing.assert_array_equal(models.load_model(path).get_weights()[0], m.get_weights()[0])
        m2 = tiny_model(seed=1)
        m2.save_weights(path)
        m.load_weights(path)
        np.testing.assert_array_equal(m.get_weights()[0], m2.get_weights()[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.fastnn", "p.fastnn"]


def test_keyboard_interrupt_mid_save_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)
    before = path.read_bytes()

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np.lib.format, "write_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        tiny_model(seed=5).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.fastnn"]


def test_sigterm_handler_only_while_saving_in_the_main_thread(tmp_path, monkeypatch):
    seen = []
    real = np.lib.format.write_array

    def record(*a, **k):
        seen.append((threading.current_thread() is threading.main_thread(),
                     signal.getsignal(signal.SIGTERM)))
        return real(*a, **k)
    monkeypatch.setattr(np.lib.format, "write_array", record)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    tiny_model(seed=0).save(tmp_path / "main.fastnn")
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    assert seen and all(main and h != signal.SIG_DFL for main, h in seen)  # replaced meanwhile
    seen.clear()
    errors = []
    t = threading.Thread(target=lambda: _catch(errors, tiny_model(seed=0).save, tmp_path / "t.fastnn"))
    t.start()
    t.join()
    assert not errors and seen and all(not main and h == signal.SIG_DFL for main, h in seen)
    # a program's own handler is left in place
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        seen.clear()
        tiny_model(seed=0).save(tmp_path / "main.fastnn")
        assert all(h is mine for _, h in seen) and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def _catch(errors, f, *args):
    try:
        f(*args)
    except Exception as e:  # reported to the test's thread
        errors.append(e)


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from fastnn import layers, models

    def slow(*args, **kwargs):  # the save hangs in its first array write, temporary file open
        time.sleep(60)
    np.lib.format.write_array = slow
    models.Sequential([layers.Dense(4, input_shape=(3,))], seed=1).save(sys.argv[1])
""")


def test_sigterm_mid_save_removes_the_temporary_and_keeps_the_file(tmp_path):
    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)
    before = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob(".fastnn-*.tmp")):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never started saving"
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGTERM  # it still ends by SIGTERM
    assert list(tmp_path.glob(".fastnn-*.tmp")) == []
    assert path.read_bytes() == before


_CHILD_EARLY = textwrap.dedent("""
    import os, signal, sys, tempfile
    from fastnn import layers, models

    real = tempfile.mkstemp
    def mkstemp(*args, **kwargs):  # SIGTERM lands once the file exists, before save knows it
        made = real(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # in this thread, at once
        return made
    tempfile.mkstemp = mkstemp
    models.Sequential([layers.Dense(4, input_shape=(3,))], seed=1).save(sys.argv[1])
""")


def test_sigterm_as_the_temporary_is_made_still_removes_it(tmp_path):
    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)
    before = path.read_bytes()
    child = subprocess.run([sys.executable, "-c", _CHILD_EARLY, str(path)],
                           capture_output=True, timeout=60)
    assert child.returncode == -signal.SIGTERM, child.stderr
    assert list(tmp_path.glob(".fastnn-*.tmp")) == []
    assert path.read_bytes() == before
