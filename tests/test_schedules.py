"""The learning-rate schedules PolynomialDecay, CosineDecay (with warmup) and
CosineDecayRestarts against Keras 3.15: the cases and reference formulas of
keras/src/optimizers/schedules/learning_rate_schedule_test.py (each test's name cited), hand
computations at the restarts, get_config / from_config with Keras' keys, bad arguments, and
the schedules driving an optimizer on both backends and in fit's compiled step."""
import math

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, layers, models, optimizers
from conftest import blobs

S = optimizers.schedules


def close(v):  # Keras' schedule tests assert at 1e-6
    return pytest.approx(v, rel=1e-6, abs=1e-6)


# ---- PolynomialDecay: Keras' SqrtDecayTest (power 0.5) -------------------------------------------

@pytest.mark.parametrize("step, end_lr, cycle, expected", [
    (5, 0.0, False, 0.05 * 0.5 ** 0.5),  # test_halfway
    (10, 0.001, False, 0.001),  # test_end
    (5, 0.001, False, (0.05 - 0.001) * 0.5 ** 0.5 + 0.001),  # test_halfway_with_end
    (15, 0.001, False, 0.001),  # test_beyond_end
    (15, 0.001, True, (0.05 - 0.001) * 0.25 ** 0.5 + 0.001),  # test_beyond_end_with_cycle
])
def test_polynomial_decay_keras_tests(step, end_lr, cycle, expected):
    assert S.PolynomialDecay(0.05, 10, end_lr, power=0.5, cycle=cycle)(step) == close(expected)


def test_polynomial_decay_by_hand():
    # test_begin_with_cycle: step 0 with cycle is the initial rate (the multiplier is 1 there)
    assert S.PolynomialDecay(0.001, 10, cycle=True)(0) == close(0.001)
    # linear (power 1) from 0.1 to 0.01 over 4 steps: 0.1 - 0.09 s / 4, then 0.01
    p = S.PolynomialDecay(0.1, 4, 0.01)
    assert [p(s) for s in range(7)] == pytest.approx(
        [0.1, 0.0775, 0.055, 0.0325, 0.01, 0.01, 0.01], abs=1e-15)
    # cycle: d = 4 ceil(s / 4): step 4 ends the first cycle (0.01), step 5 is 3/8 into [0, 8)
    c = S.PolynomialDecay(0.1, 4, 0.01, cycle=True)
    assert c(4) == close(0.01) and c(5) == close(0.01 + 0.09 * (1 - 5 / 8))
    assert c(8) == close(0.01) and c(9) == close(0.01 + 0.09 * (1 - 9 / 12))


# ---- CosineDecay: Keras' CosineDecayTest --------------------------------------------------------

def np_cosine_decay(step, decay_steps, alpha=0.0):  # Keras' test reference
    step = min(step, decay_steps)
    decay = 0.5 * (1.0 + math.cos(math.pi * step / decay_steps))
    return (1.0 - alpha) * decay + alpha


def test_cosine_decay_keras_tests():
    for step in range(0, 1500, 250):
        assert S.CosineDecay(1.0, 1000)(step) == close(np_cosine_decay(step, 1000))  # test_decay
        assert S.CosineDecay(1.0, 1000, 0.1)(step) == close(np_cosine_decay(step, 1000, 0.1))
        # test_warmup: 0 -> 10 over 1500 steps (Keras' reference omits + initial_lr: it is 0)
        assert S.CosineDecay(0.0, 10, warmup_target=10.0, warmup_steps=1500)(step) == \
            close(step / 1500 * 10.0)
    for step in range(0, 3000, 250):  # test_warmup_decay
        lr = S.CosineDecay(0.0, 1000, warmup_target=10.0, warmup_steps=2000)(step)
        expected = step / 2000 * 10.0 if step < 2001 else \
            10.0 * np_cosine_decay(step - 2000, 1000)
        assert lr == close(expected)


def test_cosine_decay_warmup_by_hand():
    # from 0.01 up to 0.1 over 4 steps, then down to 0.1 * alpha = 0.02 over 10
    c = S.CosineDecay(0.01, 10, alpha=0.2, warmup_target=0.1, warmup_steps=4)
    assert [c(s) for s in range(4)] == pytest.approx([0.01, 0.0325, 0.055, 0.0775], abs=1e-15)
    assert c(4) == close(0.1)  # step == warmup_steps: the decay's first value
    assert c(9) == close(0.1 * (0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)) + 0.2))
    assert c(14) == close(0.02) and c(100) == close(0.02)


# ---- CosineDecayRestarts: Keras' CosineDecayRestartsTest ----------------------------------------

def np_cosine_decay_restarts(step, decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    fac = 1.0  # Keras' test reference: walks the periods
    while step >= decay_steps:
        step -= decay_steps
        decay_steps *= t_mul
        fac *= m_mul
    decay = fac * 0.5 * (1.0 + math.cos(math.pi * step / decay_steps))
    return (1.0 - alpha) * decay + alpha


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 0.1}, {"m_mul": 0.9}, {"t_mul": 1.0}],
                         ids=["test_decay", "test_alpha", "test_mmul", "test_tmul"])
def test_cosine_decay_restarts_keras_tests(kwargs):
    for step in range(0, 1500, 250):
        assert S.CosineDecayRestarts(1.0, 1000, **kwargs)(step) == \
            close(np_cosine_decay_restarts(step, 1000, **kwargs))


@pytest.mark.parametrize("t_mul, m_mul, alpha", [(2.0, 1.0, 0.0), (3.0, 0.5, 0.1),
                                                 (1.0, 0.9, 0.0), (1.5, 0.8, 0.05),
                                                 (0.5, 1.0, 0.0)])
def test_cosine_decay_restarts_every_step_and_the_restarts(t_mul, m_mul, alpha):
    # every step of several periods against the loop reference (restarts fall on whole steps
    # here: 10, 30, 70, ... for t_mul=2; 10, 40, 130 for 3; every 10 for 1; 10, 25 for 1.5;
    # 10, 15, 17.5 for 0.5)
    sched = S.CosineDecayRestarts(0.5, 10, t_mul=t_mul, m_mul=m_mul, alpha=alpha)
    last = 19 if t_mul < 1 else 150
    for step in range(last + 1):
        assert sched(step) == close(0.5 * np_cosine_decay_restarts(step, 10, t_mul, m_mul, alpha))
    if t_mul >= 1:
        assert sched(10) == close(0.5 * ((1 - alpha) * m_mul + alpha))  # a restart: m_mul ** 1
        assert sched(9) < sched(10)


def test_cosine_decay_restarts_with_shrinking_periods_end():
    # t_mul < 1: the periods sum to first_decay_steps / (1 - t_mul) = 20 steps (Keras: NaN)
    with pytest.raises(ValueError, match=r"t_mul=0.5 < 1 has no period at step 20"):
        S.CosineDecayRestarts(0.5, 10, t_mul=0.5)(20)


# ---- configs, names, errors ---------------------------------------------------------------------

def test_configs_as_keras_and_round_trips():
    # Keras' test_config cases; get_config() keys as Keras 3.15 writes them
    cases = [
        (S.PolynomialDecay(0.05, 10, 0.001, power=0.5, cycle=True, name="my_pd"),
         {"initial_learning_rate": 0.05, "decay_steps": 10, "end_learning_rate": 0.001,
          "power": 0.5, "cycle": True, "name": "my_pd"}),
        (S.CosineDecay(initial_learning_rate=0.05, decay_steps=10, alpha=0.1, warmup_target=0.2,
                       warmup_steps=2, name="my_cd"),
         {"initial_learning_rate": 0.05, "decay_steps": 10, "alpha": 0.1, "name": "my_cd",
          "warmup_target": 0.2, "warmup_steps": 2}),
        (S.CosineDecayRestarts(initial_learning_rate=0.05, first_decay_steps=10, alpha=0.1,
                               t_mul=3.0, m_mul=4.0, name="my_cdr"),
         {"initial_learning_rate": 0.05, "first_decay_steps": 10, "t_mul": 3.0, "m_mul": 4.0,
          "alpha": 0.1, "name": "my_cdr"}),
    ]
    for sched, cfg in cases:
        assert sched.get_config() == cfg
        back = type(sched).from_config(sched.get_config())
        assert back.get_config() == cfg and [back(k) for k in range(50)] == \
            [sched(k) for k in range(50)]
    # the default names
    assert S.PolynomialDecay(0.1, 10).name == "PolynomialDecay"
    assert S.CosineDecay(0.1, 10).name == "CosineDecay"
    assert S.CosineDecayRestarts(0.1, 10).name == "SGDRDecay"
    assert S.CosineDecay(0.1, 10).get_config()["warmup_target"] is None


@pytest.mark.parametrize("make, match", [
    (lambda: S.PolynomialDecay(0.1, 0), r"Argument `decay_steps` must be > 0. Received: "
                                        r"decay_steps=0"),
    (lambda: S.CosineDecay(0.1, -5), r"Argument `decay_steps` must be > 0.*=-5"),
    (lambda: S.CosineDecayRestarts(0.1, 0), r"Argument `first_decay_steps` must be > 0"),
    (lambda: S.CosineDecay(0.1, float("nan")), r"decay_steps=nan"),
    (lambda: S.PolynomialDecay(-0.1, 10), r"initial_learning_rate"),
    (lambda: S.PolynomialDecay(0.1, 10, end_learning_rate=float("inf")), r"end_learning_rate"),
    (lambda: S.PolynomialDecay(0.1, 10, power=-1.0), r"power"),
    (lambda: S.CosineDecay(0.1, 10, alpha=float("nan")), r"alpha"),
    (lambda: S.CosineDecay(0.1, 10, warmup_target=-1.0), r"warmup_target"),
    (lambda: S.CosineDecay(0.1, 10, warmup_target=1.0, warmup_steps=-2), r"warmup_steps"),
    (lambda: S.CosineDecayRestarts(0.1, 10, t_mul=0.0), r"t_mul"),
    (lambda: S.CosineDecayRestarts(0.1, 10, m_mul=-1.0), r"m_mul"),
    (lambda: S.CosineDecayRestarts(0.1, 10, alpha="x"), r"alpha"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---- in optimizers, on both backends, and in fit's compiled step --------------------------------

SCHEDULES = {
    "polynomial": lambda: S.PolynomialDecay(0.05, 3, 0.005, power=2.0, cycle=True),
    "cosine": lambda: S.CosineDecay(0.01, 4, alpha=0.1, warmup_target=0.05, warmup_steps=2),
    "restarts": lambda: S.CosineDecayRestarts(0.05, 2, t_mul=2.0, m_mul=0.5),
}


@pytest.mark.parametrize("backend", ["compiled", "numpy"])
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_sgd_steps_follow_the_schedule(name, backend):
    # plain SGD: p := p - lr(t) g with t the step counter from 0; g = 1: p falls by lr(t)
    sched = SCHEDULES[name]()
    before = fastnn.get_backend()
    fastnn.set_backend(backend)
    try:
        opt = optimizers.SGD(sched)
        p = np.zeros(3, np.float32)
        want = np.zeros(3, np.float32)
        for t in range(9):
            assert opt.learning_rate == sched(t)
            opt.apply([p], [np.ones(3, np.float32)])
            want -= np.float32(sched(t))
            np.testing.assert_array_equal(p, want)
    finally:
        fastnn.set_backend(before)
    cfg = opt.get_config()
    assert cfg["learning_rate"] == {"schedule": type(sched).__name__,
                                    "config": sched.get_config()}
    back = optimizers.SGD.from_config(cfg)
    assert type(back.schedule) is type(sched) and back.get_config() == cfg


def _fit(name, compiled, x, y):
    m = models.Sequential([layers.Dense(7, activation="relu", input_shape=(6,)),
                           layers.Dense(3, activation="softmax")], seed=3)
    m.compile(optimizers.Adam(SCHEDULES[name]()), "categorical_crossentropy",
              jit_compile="auto" if compiled else False)
    lrs = []
    cb = callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: lrs.append(m.optimizer.learning_rate))
    m.fit(x, y, epochs=2, batch_size=7, verbose=0, callbacks=[cb])
    xp = np.ascontiguousarray(x, np.float32)
    t = m.loss.prepare_targets(y, 3, xp.dtype)
    return m.get_weights(), lrs, m.trainer.compiled_step(m.optimizer, xp, t, 7)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_compiled_step_is_the_python_step_with_the_schedule(name):
    x, y, _ = blobs(n=30, d=6, k=3)
    (wc, lc, step_c), (wp, lp, step_p) = _fit(name, True, x, y), _fit(name, False, x, y)
    assert step_c is not None and step_p is None  # (the compiled step ran, then not)
    sched = SCHEDULES[name]()
    assert lc == lp == [sched(t) for t in range(1, 11)]  # (after each of the 10 steps)
    for a, b in zip(wc, wp):
        assert np.array_equal(a, b)
