"""Optimizers, named as in `keras.optimizers`, with Keras 3's update rules and defaults.

Every step is one fused kernel call per parameter array: it reads the parameter, its
gradient and the optimizer state once and writes the parameter and the state once.
With `weight_decay=wd`, every rule first applies decoupled weight decay
`p := p - lr * wd * p` (as Keras does).

| optimizer | state | update (g = gradient, t = step number from 1) |
| --- | --- | --- |
| SGD | - | p := p - lr g |
| SGD(momentum=mu) | m = 0 | m := mu m - lr g;  p := p + m |
| SGD(momentum=mu, nesterov=True) | m = 0 | m := mu m - lr g;  p := p + mu m - lr g |
| Adagrad | a = 0.1 | a := a + g^2;  p := p - lr g / sqrt(a + eps) |
| RMSprop | v = 0 | v := rho v + (1 - rho) g^2;  p := p - lr g / sqrt(v + eps) |
| Adam | m = v = 0 | m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2); p := p - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) |
| Adamax | m = u = 0 | m += (g - m)(1 - b1);  u := max(b2 u, abs(g));  p := p - lr / (1 - b1^t) m / (u + eps) |
| Adadelta | ag = ad = 0 | ag := rho ag + (1 - rho) g^2;  d := -sqrt(ad + eps) g / sqrt(ag + eps);  ad := rho ad + (1 - rho) d^2;  p := p + lr d |
| Lion | m = 0 | p := p - lr sign(b1 m + (1 - b1) g);  m := b2 m + (1 - b2) g |

Learning rates may be a float or a schedule from `optimizers.schedules`.
"""
from __future__ import annotations

import math
import types
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

from fastnn import _data, backend

if TYPE_CHECKING:
    from numpy.typing import NDArray


# ---- learning-rate schedules ---------------------------------------------------------------

class LearningRateSchedule:
    """A learning rate as a function of the optimizer's step counter (from 0).  A schedule's
    config is its constructor's arguments, `name` included (Keras' get_config/from_config)."""

    name: str

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearningRateSchedule:
        return cls(**config)


class _DecaySchedule(LearningRateSchedule):
    """Shared by the decays of the form f(initial_learning_rate, decay_rate, step / decay_steps);
    staircase=True floors step / decay_steps (a step decay)."""

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str | None = None) -> None:
        _positive("initial_learning_rate", initial_learning_rate, allow_zero=True)
        _positive("decay_steps", decay_steps)
        _positive("decay_rate", decay_rate, allow_zero=True)
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)
        self.name = name or type(self).__name__

    def _progress(self, step: int) -> float:
        e = step / self.decay_steps
        return math.floor(e) if self.staircase else e


class ExponentialDecay(_DecaySchedule):
    """lr(step) = initial_learning_rate * decay_rate ** (step / decay_steps)."""

    def __call__(self, step: int) -> float:
        # (typeshed types a float to a float power as Any: it may be complex; not here)
        lr: float = self.initial_learning_rate * self.decay_rate ** self._progress(step)
        return lr


class PiecewiseConstantDecay(LearningRateSchedule):
    """lr = values[i] for boundaries[i-1] < step <= boundaries[i] (a step schedule)."""

    def __init__(self, boundaries: Sequence[float], values: Sequence[float],
                 name: str = "PiecewiseConstant") -> None:
        for arg, seq in (("boundaries", boundaries), ("values", values)):
            if not isinstance(seq, (list, tuple, np.ndarray)):
                raise TypeError(f"Expected {arg} to be a list. Received: {arg}={seq!r}")
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"Expected len(values) == len(boundaries) + 1. Received: "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        for i, b in enumerate(boundaries):
            if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(b) or (i and b <= boundaries[i - 1]):
                raise ValueError(f"Expected boundaries to be finite, strictly increasing numbers. "
                                 f"Received: boundaries={boundaries!r}")
        for i, v in enumerate(values):
            _positive(f"values[{i}]", v, allow_zero=True)
        self.boundaries = list(boundaries)
        self.values = [float(v) for v in values]
        self.name = name

    def __call__(self, step: int) -> float:
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]


class InverseTimeDecay(_DecaySchedule):
    """lr(step) = initial_learning_rate / (1 + decay_rate * step / decay_steps)."""

    def __call__(self, step: int) -> float:
        return self.initial_learning_rate / (1 + self.decay_rate * self._progress(step))


def _steps(name: str, value: Any) -> None:
    """A schedule's number of steps: a finite number > 0 (Keras' message)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value!r}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value):
        raise ValueError(f"Expected {name} to be a finite float. Received: {name}={value!r}")


class PolynomialDecay(LearningRateSchedule):
    """lr(step) = (initial_learning_rate - end_learning_rate) * (1 - s / d) ** power
    + end_learning_rate, as `keras.optimizers.schedules.PolynomialDecay`: s = min(step, d),
    d = decay_steps; with cycle=True, s = step and d = decay_steps * ceil(step / decay_steps)
    (decay_steps at step 0): the decay restarts from initial_learning_rate every decay_steps.

    Args:
        initial_learning_rate: the rate at step 0 (a float >= 0).
        decay_steps: the steps over which to decay (> 0).
        end_learning_rate: the rate reached after decay_steps (default 0.0001).
        power: the power of the polynomial (>= 0, default 1.0: linear).
        cycle: restart the decay every decay_steps (a bool, default False).
        name: default "PolynomialDecay".
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 end_learning_rate: float = 0.0001, power: float = 1.0, cycle: bool = False,
                 name: str = "PolynomialDecay") -> None:
        _positive("initial_learning_rate", initial_learning_rate, allow_zero=True)
        _steps("decay_steps", decay_steps)
        _positive("end_learning_rate", end_learning_rate, allow_zero=True)
        _positive("power", power, allow_zero=True)
        if not isinstance(cycle, (bool, np.bool_)):  # (Keras takes any truth value)
            raise ValueError(f"Expected cycle to be a bool. Received: cycle={cycle!r}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.end_learning_rate = float(end_learning_rate)
        self.power = float(power)
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step: int) -> float:
        s, d = float(step), float(self.decay_steps)
        if self.cycle:
            d *= 1.0 if s == 0 else math.ceil(s / d)
        else:
            s = min(s, d)
        lr: float = ((self.initial_learning_rate - self.end_learning_rate)
                     * (1.0 - s / d) ** self.power + self.end_learning_rate)
        return lr


class CosineDecay(LearningRateSchedule):
    """A cosine decay, after an optional linear warmup, as
    `keras.optimizers.schedules.CosineDecay` (Loshchilov & Hutter, SGDR):

    - without warmup_target: lr(step) = initial_learning_rate * ((1 - alpha) * c + alpha),
      c = 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps));
    - with warmup_target: for step < warmup_steps, lr = initial_learning_rate +
      (warmup_target - initial_learning_rate) * step / warmup_steps; then the decay above
      from warmup_target, over step - warmup_steps.

    Args:
        initial_learning_rate: the rate at step 0 (a float >= 0).
        decay_steps: the steps over which to decay (> 0).
        alpha: the final rate as a fraction of the decay's first rate (default 0.0).
        name: default "CosineDecay".
        warmup_target: None (default: no warmup) or the rate the warmup reaches.
        warmup_steps: the steps of the warmup (>= 0, default 0).
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None,
                 warmup_steps: float = 0) -> None:
        _positive("initial_learning_rate", initial_learning_rate, allow_zero=True)
        _steps("decay_steps", decay_steps)
        _finite("alpha", alpha)
        if warmup_target is not None:
            _positive("warmup_target", warmup_target, allow_zero=True)
        _positive("warmup_steps", warmup_steps, allow_zero=True)
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = decay_steps
        self.alpha = float(alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        self.warmup_steps = warmup_steps

    def _decay(self, step: float, start: float) -> float:
        c = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1.0 - self.alpha) * c + self.alpha)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        s = min(step, self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            return (self.warmup_target - self.initial_learning_rate) * s / self.warmup_steps \
                + self.initial_learning_rate
        return self._decay(s - self.warmup_steps, self.warmup_target)


class CosineDecayRestarts(LearningRateSchedule):
    """A cosine decay with warm restarts, as `keras.optimizers.schedules.CosineDecayRestarts`
    (Loshchilov & Hutter, SGDR): period i (from 0) lasts first_decay_steps * t_mul**i steps;
    at fraction f of it, lr = initial_learning_rate * ((1 - alpha) * m_mul**i * 0.5 *
    (1 + cos(pi * f)) + alpha).  (As Keras, alpha is not scaled by m_mul**i.)

    Args:
        initial_learning_rate: the rate at step 0 (a float >= 0).
        first_decay_steps: the steps of the first period (> 0).
        t_mul: each period's length over the previous one's (> 0, default 2.0).
        m_mul: each period's first rate over the previous one's (>= 0, default 1.0).
        alpha: the lowest rate as a fraction of initial_learning_rate (default 0.0).
        name: default "SGDRDecay".

    With t_mul < 1 the periods end at step first_decay_steps / (1 - t_mul): a later step
    raises ValueError (Keras returns NaN).  Keras finds the period i as floor(log(1 - f (1 - t_mul)) / log(t_mul)) in float32, which
    can fall on either side of a restart; here that estimate is corrected to the exact period
    (the one Keras' own test reference computes by a loop).
    """

    def __init__(self, initial_learning_rate: float, first_decay_steps: float,
                 t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0,
                 name: str = "SGDRDecay") -> None:
        _positive("initial_learning_rate", initial_learning_rate, allow_zero=True)
        _steps("first_decay_steps", first_decay_steps)
        _positive("t_mul", t_mul)
        _positive("m_mul", m_mul, allow_zero=True)
        _finite("alpha", alpha)
        self.initial_learning_rate = float(initial_learning_rate)
        self.first_decay_steps = first_decay_steps
        self.t_mul = float(t_mul)
        self.m_mul = float(m_mul)
        self.alpha = float(alpha)
        self.name = name

    def __call__(self, step: int) -> float:
        f = step / self.first_decay_steps  # in units of the first period
        t = self.t_mul
        if t == 1.0:
            i = math.floor(f)
            frac = f - i
        else:
            def start(k: int) -> float:  # where period k starts: sum of t**j, j < k
                return (1.0 - t ** k) / (1.0 - t)
            rest = 1.0 - f * (1.0 - t)
            if rest <= 0:  # (t_mul < 1: the periods sum to first_decay_steps / (1 - t_mul))
                raise ValueError(f"CosineDecayRestarts with t_mul={t} < 1 has no period at "
                                 f"step {step}: its periods end at step "
                                 f"{self.first_decay_steps / (1.0 - t)} (Keras returns NaN)")
            i = max(math.floor(math.log(rest) / math.log(t)), 0)
            while i > 0 and start(i) > f:
                i -= 1
            while start(i + 1) <= f:
                i += 1
            frac = (f - start(i)) / t ** i
        c = 0.5 * self.m_mul ** i * (1.0 + math.cos(math.pi * frac))
        return self.initial_learning_rate * ((1.0 - self.alpha) * c + self.alpha)


schedules = types.SimpleNamespace(
    LearningRateSchedule=LearningRateSchedule, ExponentialDecay=ExponentialDecay,
    PiecewiseConstantDecay=PiecewiseConstantDecay, InverseTimeDecay=InverseTimeDecay,
    PolynomialDecay=PolynomialDecay, CosineDecay=CosineDecay,
    CosineDecayRestarts=CosineDecayRestarts)
_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, PiecewiseConstantDecay, InverseTimeDecay,
                                      PolynomialDecay, CosineDecay, CosineDecayRestarts)}


# ---- optimizers ------------------------------------------------------------------------------

class Optimizer:
    """Base class: learning rate (float or schedule), weight decay, step counter, state.

    An optimizer is declared once, by its subclass: `rule` (the kernel rule, see
    struct fnn_optimizer in src_c/fastnn.h and fastnn/_codes.py), `_slots()` (its state arrays,
    by Keras' names, in saving order) and `_hyper()` (its hyper-parameters by the kernel's
    names).  Everything else derives from that here: the state, the kernel objects of either
    backend (`kernels`), the plain and the rank-1 step (`apply`), and the compiled training
    step, which runs `kernels(params)[0]` after `begin_step()`.

    `variables` lists the state arrays (for saving); `iterations` counts steps.

    Args:
        learning_rate: a float (default 0.001) or a schedule from `optimizers.schedules`
            (or a callable without arguments returning the rate).
        weight_decay: None (the default: no decay) or a float wd: every step first applies
            p := p - lr * wd * p.
        name: the optimizer's name (default None: the class' name).
    """

    name = "optimizer"
    rule: str | None = None

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 use_ema: bool = False, ema_momentum: float = 0.99,
                 ema_overwrite_frequency: int | None = None,
                 loss_scale_factor: float | None = None,
                 gradient_accumulation_steps: int | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        if kwargs:
            raise ValueError(f"Argument(s) not recognized: {kwargs}")
        self._schedule: LearningRateSchedule | Callable[[], float] | None
        self._lr: float | None  # the learning rate when there is no schedule
        if isinstance(learning_rate, LearningRateSchedule) or callable(learning_rate):
            self._schedule = learning_rate
            self._lr = None
        else:
            _positive("learning_rate", learning_rate, allow_zero=True)
            self._schedule = None
            self._lr = float(learning_rate)
        if weight_decay is not None:
            _positive("weight_decay", weight_decay, allow_zero=True)
        self.weight_decay = weight_decay
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        if sum(v is not None for v in clips.values()) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be "
                             "set. Received: " + ", ".join(f"{k}={v}" for k, v in clips.items()))
        for k, v in clips.items():
            if v is not None:
                _positive(k, v, allow_zero=True)
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        if gradient_accumulation_steps is not None and (
                isinstance(gradient_accumulation_steps, bool)
                or not isinstance(gradient_accumulation_steps, (int, np.integer))
                or gradient_accumulation_steps < 2):
            raise ValueError("`gradient_accumulation_steps` must be an integer >= 2. Received: "
                             f"gradient_accumulation_steps={gradient_accumulation_steps}")
        self.gradient_accumulation_steps = gradient_accumulation_steps
        if use_ema:
            if not 0 <= ema_momentum <= 1:
                raise ValueError(f"`ema_momentum` must be in the range [0, 1]. "
                                 f"Received: ema_momentum={ema_momentum}")
            if ema_overwrite_frequency is not None and (
                    isinstance(ema_overwrite_frequency, bool)
                    or not isinstance(ema_overwrite_frequency, (int, np.integer))
                    or ema_overwrite_frequency < 1):
                raise ValueError("`ema_overwrite_frequency` must be an integer >= 1 or None. "
                                 f"Received: ema_overwrite_frequency={ema_overwrite_frequency}")
        self.use_ema, self.ema_momentum = bool(use_ema), ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        if loss_scale_factor is not None:
            _positive("loss_scale_factor", loss_scale_factor)
        self.loss_scale_factor = loss_scale_factor
        self.name = name or self.name
        self.iterations = 0      # update steps (Keras' `iterations`)
        self._micro_steps = 0    # calls of apply under gradient accumulation
        # per parameter array: dict slot -> array
        self.state: list[dict[str, NDArray[Any]]] | None = None
        self._accumulated: list[NDArray[Any]] | None = None  # gradient accumulators
        self._averages: list[NDArray[Any]] | None = None     # EMA of the parameters
        self._exclude_names: tuple[str, ...] = ()
        self._exclude_ids: set[int] = set()
        self._layout: list[tuple[int, int, int, str]] = []  # (array, start, stop, name)
        self._kernels: list[Any] | None
        self._built_for: Any
        self._kernels = self._built_for = None
        self._no_decay: list[Any] | None = None

    @property
    def plain(self) -> bool:
        """True when a step is the rule alone over the whole flat buffer (no clipping,
        accumulation, moving average, loss scaling or weight-decay exclusion): the compiled
        training step and the rank-1 path then apply (see fastnn/_step.py); else the gradient
        is formed and `apply` does each of those in Keras' order."""
        return (self.clipnorm is None and self.clipvalue is None and self.global_clipnorm is None
                and not self.gradient_accumulation_steps and not self.use_ema
                and self.loss_scale_factor is None
                and not (self.weight_decay and (self._exclude_names or self._exclude_ids)))

    def exclude_from_weight_decay(self, var_list: Sequence[NDArray[Any]] | None = None,
                                  var_names: Sequence[str] | None = None) -> None:
        """Exclude variables from weight decay, as Keras: those of var_list, and those whose
        name ("dense/bias": the layer's name, then the weight's) contains one of var_names.
        Only before the optimizer is built (ValueError after, as Keras)."""
        if self.state is not None:
            raise ValueError("`exclude_from_weight_decay()` can only be configured before the "
                             "optimizer is built.")
        self._exclude_ids = {id(v) for v in var_list or ()}
        self._exclude_names = tuple(var_names or ())

    def set_variables(self, variables: Sequence[tuple[str, NDArray[Any]]],
                      params: Sequence[NDArray[Any]]) -> None:
        """Tell the optimizer the model's trainable variables: (name, array) with each array a
        view into one of params (the flat buffers it steps), for the per-variable options
        (clipnorm, exclude_from_weight_decay).  Set by the model when it compiles."""
        layout = []
        for name, v in variables:
            for i, p in enumerate(params):
                off = (v.__array_interface__["data"][0] - p.__array_interface__["data"][0])
                off //= p.itemsize
                if 0 <= off and off + v.size <= p.size and np.shares_memory(v, p):
                    layout.append((i, int(off), int(off + v.size), name))
                    break
            else:
                raise ValueError(f"Expected variable {name!r} to be a view into the parameters.")
        self._layout = layout
        self._variable_ids = {name: id(v) for name, v in variables}

    def __getstate__(self) -> dict[str, Any]:
        """What pickle and deepcopy copy: all but the kernel objects (made again on use)."""
        return {**self.__dict__, "_kernels": None, "_no_decay": None, "_built_for": None}

    def _slots(self) -> tuple[str, ...]:
        """The state arrays this optimizer keeps (names of fastnn/_codes.py OPTIMIZER_SLOTS)."""
        return ()

    def _hyper(self) -> dict[str, Any]:
        """The rule's hyper-parameters (names of fastnn/_codes.py OPTIMIZER_HYPER)."""
        return {}

    def _init_slot(self, slot: str, p: NDArray[Any]) -> NDArray[Any]:
        return _data.aligned_empty(p.shape, p.dtype, zero=True)

    def _u_product(self, t: int) -> float:
        """The product the nadam rule reads at step t (1 for every other rule)."""
        return 1.0

    @property
    def learning_rate(self) -> float:
        """The learning rate for the next step."""
        if self._schedule is None:
            return cast(float, self._lr)  # a float when there is no schedule
        if isinstance(self._schedule, LearningRateSchedule):
            return float(self._schedule(self.iterations))
        return float(self._schedule())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        """A new float rate; as in Keras, an optimizer built on a LearningRateSchedule
        refuses it (TypeError)."""
        if isinstance(self._schedule, LearningRateSchedule):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as "
                            "its `learning_rate` constructor argument, hence its learning rate "
                            "is not settable. If you need the learning rate to be settable, you "
                            "should instantiate the optimizer with a float `learning_rate` "
                            "argument.")
        _positive("learning_rate", value, allow_zero=True)
        self._schedule, self._lr = None, float(value)

    @property
    def schedule(self) -> LearningRateSchedule | Callable[[], float] | None:
        """The learning-rate schedule (or callable) the optimizer was built on, else None."""
        return self._schedule

    def build(self, params: Sequence[NDArray[Any]]) -> None:
        """Create the state for these parameter arrays (zeros, or the rule's initial value),
        checked to fit in memory first; with gradient accumulation or EMA, their arrays too."""
        extra = bool(self.gradient_accumulation_steps) + self.use_ema
        _data.ensure_memory((len(self._slots()) + extra) * sum(p.nbytes for p in params),
                            f"the {type(self).__name__} state")
        self.state = [{s: self._init_slot(s, p) for s in self._slots()} for p in params]
        self._accumulated = ([np.zeros_like(p) for p in params]
                             if self.gradient_accumulation_steps else None)
        # (zeros as Keras makes them: the first step sets the average to the weights)
        self._averages = [np.zeros_like(p) for p in params] if self.use_ema else None
        self._kernels = None

    @property
    def variables(self) -> list[NDArray[Any]]:
        """The rule's state arrays, per parameter buffer, slot by slot (`_slots()`)."""
        return [st[s] for st in (self.state or []) for s in self._slots()]

    @property
    def moving_averages(self) -> list[NDArray[Any]]:
        """use_ema: the moving average of each parameter buffer (Keras' "average" variables);
        else, or before the state is built, []."""
        return list(self._averages or [])

    @property
    def gradient_accumulators(self) -> list[NDArray[Any]]:
        """gradient_accumulation_steps: the summed gradients of the steps since the last
        update, per parameter buffer; else, or before the state is built, []."""
        return list(self._accumulated or [])

    @property
    def calls(self) -> int:
        """Keras' `iteration` variable: the number of apply() calls, which is `iterations`
        (the update steps) times gradient_accumulation_steps plus the pending calls."""
        return self._micro_steps if self.gradient_accumulation_steps else self.iterations

    @calls.setter
    def calls(self, value: int) -> None:
        self._micro_steps = int(value)
        steps = self.gradient_accumulation_steps
        self.iterations = int(value) // steps if steps else int(value)

    def kernels(self, params: Sequence[NDArray[Any]]) -> list[Any]:
        """The active backend's kernel object of each parameter array (`OptimizerStep`: the
        rule, hyper-parameters and state in one struct), built once per state and backend."""
        if self.state is None:
            self.build(params)
        if self._kernels is None or self._built_for is not backend.K:
            hyper = {**self._hyper(), "weight_decay": self.weight_decay or 0.0}
            states = cast("list[dict[str, NDArray[Any]]]", self.state)  # built above
            self._kernels = [backend.K.OptimizerStep(p, self.rule, hyper, st)
                             for p, st in zip(params, states)]
            # the same rule and state without weight decay, for excluded variables (if any)
            self._no_decay = [backend.K.OptimizerStep(p, self.rule, {**hyper, "weight_decay": 0.0},
                                                      st) for p, st in zip(params, states)
                              ] if self._exclude_names or self._exclude_ids else []
            self._built_for = backend.K
        return self._kernels

    def begin_step(self, params: Sequence[NDArray[Any]]) -> list[Any]:
        """Count the step and give its scalars (learning rate, number) to every kernel object;
        returns them."""
        kernels = self.kernels(params)
        scalars = self._count_step()
        for k in kernels + cast("list[Any]", self._no_decay):
            k.begin(*scalars)
        return kernels

    def count_steps(self, steps: int) -> NDArray[np.float64]:
        """Count `steps` steps at once: their scalars as (steps, 3) float64 rows (learning
        rate, number, u product), for a kernel that runs them all (`DenseStack.run_steps`)."""
        return np.array([self._count_step() for _ in range(steps)], dtype=np.float64)

    def _count_step(self) -> tuple[float, int, float]:
        """Count one step; its scalars (OptimizerStep.begin's): the learning rate for it
        (before counting it), its number, the nadam product."""
        lr = self.learning_rate
        self.iterations += 1
        return lr, self.iterations, self._u_product(self.iterations)

    def scale_loss(self, loss: float) -> float:
        """loss * loss_scale_factor (the gradient `apply` receives is of the scaled loss)."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    def apply(self, params: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]],
              rank1: tuple[NDArray[Any], NDArray[Any]] | None = None) -> None:
        """One step on every parameter array, as Keras' apply: unscale the gradients
        (loss_scale_factor), accumulate them (gradient_accumulation_steps: the update happens
        every that many calls, with the mean), clip them (clipnorm per variable,
        global_clipnorm, clipvalue), then weight decay and the rule in one kernel pass, then the
        moving average (use_ema).  The gradients may be modified in place.

        rank1=(a, b) (only when `plain`): the gradient of the first a.size * b.size elements of
        params[0] is outer(a, b) (a dense kernel's, for one sample) and is applied without being
        formed; those elements of grads[0] are not read."""
        if self.plain:
            self._step(params, grads, rank1)
            return
        if rank1 is not None:
            raise ValueError("Expected rank1=None: this optimizer needs the whole gradient.")
        before = self.iterations
        if self.state is None:
            self.build(params)
        if self.loss_scale_factor is not None:
            for g in grads:
                g /= g.dtype.type(self.loss_scale_factor)
        update = True
        if self.gradient_accumulation_steps:
            steps = self.gradient_accumulation_steps
            self._micro_steps += 1
            update = self._micro_steps % steps == 0
            for g, acc in zip(grads, cast("list[NDArray[Any]]", self._accumulated)):
                if update:
                    g += acc
                    g /= g.dtype.type(steps)
                    acc[...] = 0
                else:
                    acc += g
        if update:
            self._clip(grads)
            self._step(params, grads, None)
        if self.use_ema:
            momentum = self.ema_momentum if before else 0.0
            for p, avg in zip(params, cast("list[NDArray[Any]]", self._averages)):
                avg *= avg.dtype.type(momentum)
                avg += avg.dtype.type(1 - momentum) * p
            if self.ema_overwrite_frequency and (before + 1) % self.ema_overwrite_frequency == 0:
                self.finalize_variable_values(params)

    def finalize_variable_values(self, params: Sequence[NDArray[Any]]) -> None:
        """With use_ema, overwrite the parameters with their moving average (fit does this at
        its end, as Keras)."""
        if self.use_ema and self._averages is not None:
            for p, avg in zip(params, self._averages):
                p[...] = avg

    def _variables_of(self, params: Sequence[NDArray[Any]]) -> list[tuple[int, int, int, str]]:
        """(array, start, stop, name) of each variable; each array its own without a layout."""
        return self._layout or [(i, 0, p.size, f"variable_{i}") for i, p in enumerate(params)]

    def _clip(self, grads: Sequence[NDArray[Any]]) -> None:
        """Keras' clipping of the gradients, in place."""
        if self.clipnorm:
            c = self.clipnorm
            for i, a, b, _ in self._variables_of(grads):
                g = grads[i].reshape(-1)[a:b]
                norm = math.sqrt(float(np.dot(g, g)))
                if norm > 0:  # g * c / max(norm, c)
                    g *= g.dtype.type(c / max(norm, c))
        elif self.global_clipnorm:
            c = self.global_clipnorm
            norm = math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads))
            scale = c * min(1.0 / norm if norm else math.inf, 1.0 / c)
            if not math.isfinite(norm):
                scale = math.nan  # as Keras: a non-finite norm makes every gradient NaN
            for g in grads:
                g *= g.dtype.type(scale)
        elif self.clipvalue:
            for g in grads:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)

    def _step(self, params: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]],
              rank1: tuple[NDArray[Any], NDArray[Any]] | None) -> None:
        """Weight decay and the rule, one kernel pass per parameter array (per run of
        variables excluded from weight decay or not)."""
        kernels = self.begin_step(params)
        plain = cast("list[Any]", self._no_decay)
        excluded: dict[int, list[tuple[int, int]]] = {}
        if self.weight_decay and (self._exclude_names or self._exclude_ids):
            ids = getattr(self, "_variable_ids", {})
            for i, a, b, name in self._variables_of(params):
                if any(s in name for s in self._exclude_names) or ids.get(name) in self._exclude_ids:
                    excluded.setdefault(i, []).append((a, b))
        for i, (k, p, g) in enumerate(zip(kernels, params, grads)):
            start = 0
            if rank1 is not None and i == 0:
                k.outer_step(p, *rank1)
                start = rank1[0].size * rank1[1].size
            for a, b in sorted(excluded.get(i, [])):
                if a > start:
                    k.step(p, g, start, a)
                plain[i].step(p, g, a, b)
                start = b
            if p.size > start:
                k.step(p, g, start)

    def get_config(self) -> dict[str, Any]:
        """Keras' config keys: name, learning_rate (a float or a schedule's
        {"schedule", "config"}), weight_decay, the clipping, EMA, loss-scale and accumulation
        options, then the rule's own (subclasses)."""
        lr: float | dict[str, Any] | None = self._lr
        if self._schedule is not None:
            if not isinstance(self._schedule, LearningRateSchedule):
                raise ValueError("Cannot save an optimizer whose learning rate is a plain "
                                 "callable; use a fastnn.optimizers.schedules class.")
            lr = {"schedule": type(self._schedule).__name__, "config": self._schedule.get_config()}
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "clipvalue": self.clipvalue, "use_ema": self.use_ema,
                "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """The optimizer a get_config() describes (no state), as Keras' from_config; a
        schedule may be given as {"schedule", "config"} or Keras' {"class_name", "config"}."""
        cfg = _config(config, "optimizer")
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            kind = lr.get("schedule", lr.get("class_name"))
            if not isinstance(kind, str) or kind not in _SCHEDULES:
                raise ValueError(f"Unknown learning-rate schedule {kind!r}; fastnn has "
                                 f"{sorted(_SCHEDULES)}")
            cfg["learning_rate"] = _SCHEDULES[kind].from_config(_config(lr.get("config"),
                                                                        "schedule"))
        return cls(**cfg)


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"Expected {name} to be a {'non-negative' if allow_zero else 'positive'} "
                         f"float. Received: {name}={value!r}")


def _moments(beta_1: float, beta_2: float, epsilon: float) -> tuple[float, float, float]:
    """Adam's, Nadam's and Adamax's hyper-parameters, checked: (beta_1, beta_2, epsilon) as
    floats."""
    for k, v in (("beta_1", beta_1), ("beta_2", beta_2)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 <= v < 1:
            raise ValueError(f"Expected {k} in [0, 1). Received: {k}={v!r}")
    _positive("epsilon", epsilon)
    return float(beta_1), float(beta_2), float(epsilon)


class SGD(Optimizer):
    """Gradient descent, optionally with momentum (Keras 3 rule):

        m := momentum * m - lr * g
        p := p + m                              (nesterov=False)
        p := p + momentum * m - lr * g          (nesterov=True)

    With momentum 0: p := p - lr * g.  Defaults: learning_rate=0.01, momentum=0.0.

    The momentum pseudo-code on some lecture slides reads
    `velocity = past_velocity * momentum + learning_rate * gradient;
    w = w + momentum * velocity - learning_rate * gradient`: the `+ learning_rate * gradient`
    is a sign misprint.  Corrected (velocity := momentum * velocity - lr * g), it is exactly
    `SGD(momentum=m, nesterov=True)`.

    Args:
        learning_rate: a float or a schedule (default 0.01).
        momentum: a float in [0, 1] (default 0.0: plain gradient descent).
        nesterov: whether to apply Nesterov momentum (default False).
        weight_decay: None (default) or a float: decoupled weight decay, p := p - lr * wd * p.
        name: the optimizer's name (default None: "SGD").
    """

    name = "SGD"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.01,
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"Expected momentum to be a float in [0, 1]. Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    rule = "sgd"

    def _slots(self) -> tuple[str, ...]:
        return ("momentums",) if self.momentum != 0 else ()

    def _hyper(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Adagrad (Keras 3 rule): a := a + g^2;  p := p - lr * g / sqrt(a + epsilon).

    The accumulator a starts at initial_accumulator_value (0.1).  Defaults:
    learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None
    (none), name=None ("adagrad")."""

    name = "adagrad"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 initial_accumulator_value: float = 0.1, epsilon: float = 1e-7,
                 weight_decay: float | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        _positive("initial_accumulator_value", initial_accumulator_value, allow_zero=True)
        _positive("epsilon", epsilon)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    rule = "adagrad"

    def _slots(self) -> tuple[str, ...]:
        return ("accumulators",)

    def _hyper(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def _init_slot(self, slot: str, p: NDArray[Any]) -> NDArray[Any]:
        return np.full_like(p, self.initial_accumulator_value)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop (Keras 3 rule):

        v := rho * v + (1 - rho) * g^2
        centered:  mg := rho * mg + (1 - rho) * g;  d := v - mg^2 + epsilon
        else:      d := v + epsilon
        inc := lr * g / sqrt(d)
        momentum > 0:  mom := momentum * mom + inc;  p := p - mom
        else:          p := p - inc

    Defaults: learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
    weight_decay=None (none), name=None ("rmsprop")."""

    name = "rmsprop"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7,
                 centered: bool = False, weight_decay: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        if not 0 <= rho <= 1:
            raise ValueError(f"Expected rho in [0, 1]. Received: rho={rho!r}")
        _positive("momentum", momentum, allow_zero=True)
        _positive("epsilon", epsilon)
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)

    rule = "rmsprop"

    def _slots(self) -> tuple[str, ...]:
        return ("velocities",) + (("momentums",) if self.momentum > 0 else ()) + \
            (("average_gradients",) if self.centered else ())

    def _hyper(self) -> dict[str, Any]:
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adam(Optimizer):
    """Adam (Keras 3 rule, epsilon-hat form), at step t = 1, 2, ...:

        alpha := lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m := m + (g - m) * (1 - beta_1);  v := v + (g^2 - v) * (1 - beta_2)
        amsgrad:  vhat := max(vhat, v), used in place of v
        p := p - alpha * m / (sqrt(v) + epsilon)

    Defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
    weight_decay=None (none), name=None ("adam")."""

    name = "adam"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 amsgrad: bool = False, weight_decay: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = _moments(beta_1, beta_2, epsilon)
        self.amsgrad = bool(amsgrad)

    rule = "adam"

    def _slots(self) -> tuple[str, ...]:
        return ("momentums", "velocities") + (("velocity_hats",) if self.amsgrad else ())

    def _hyper(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay, on by default (Keras 3's AdamW): first
    p := p - lr * weight_decay * p, then the Adam rule.  Defaults: learning_rate=0.001,
    weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
    name=None ("adamw")."""

    name = "adamw"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 weight_decay: float = 0.004, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, name: str | None = None,
                 **kwargs: Any) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, name=name,
                         **kwargs)


class Nadam(Optimizer):
    """Nadam, Adam with Nesterov momentum (Keras 3 rule), at step t = 1, 2, ...:

        u_s := beta_1 * (1 - 0.5 * 0.96^s);  P_t := u_1 * ... * u_t
        m := m + (g - m) * (1 - beta_1);  v := v + (g^2 - v) * (1 - beta_2)
        m_hat := u_{t+1} m / (1 - P_t u_{t+1}) + (1 - u_t) g / (1 - P_t)
        p := p - lr * m_hat / (sqrt(v / (1 - beta_2^t)) + epsilon)

    Defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
    weight_decay=None (none), name=None ("nadam")."""

    name = "nadam"
    rule = "nadam"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 weight_decay: float | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = _moments(beta_1, beta_2, epsilon)
        self._product = (0, 1.0)  # (t, P_t)

    def _slots(self) -> tuple[str, ...]:
        return ("momentums", "velocities")

    def _hyper(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def _u_product(self, t: int) -> float:
        """P_t, kept from step to step.  After a jump (a loaded optimizer) P_{t-1} is made
        afresh as beta_1^(t-1) prod (1 - 0.5 * 0.96^s): past s = 1000 the factors are 1 in
        double precision, so any step count takes at most 1000 multiplications."""
        t0, product = self._product
        if t != t0 + 1:
            product = self.beta_1 ** (t - 1) * math.prod(
                1.0 - 0.5 * 0.96 ** s for s in range(1, min(t - 1, 1000) + 1))
        product *= self.beta_1 * (1.0 - 0.5 * 0.96 ** t)
        self._product = (t, product)
        return product

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (Keras 3 rule), at step t = 1, 2, ...:

        m := m + (g - m) * (1 - beta_1);  u := max(beta_2 * u, |g|)
        p := p - lr / (1 - beta_1^t) * m / (u + epsilon)

    The state is Keras' "momentum" (m) and "norm" (u), both starting at 0.  Defaults:
    learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None (none),
    name=None ("adamax")."""

    name = "adamax"
    rule = "adamax"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 weight_decay: float | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = _moments(beta_1, beta_2, epsilon)

    def _slots(self) -> tuple[str, ...]:
        return ("momentums", "norms")

    def _hyper(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta (Keras 3 rule):

        ag := rho * ag + (1 - rho) * g^2
        delta := -sqrt(ad + epsilon) * g / sqrt(ag + epsilon)
        ad := rho * ad + (1 - rho) * delta^2
        p := p + lr * delta

    The state is Keras' "accumulated_grad" (ag) and "accumulated_delta_var" (ad), both
    starting at 0.  As in Keras, the learning rate multiplies the step (default 0.001; 1.0 is
    the paper's form).  Defaults: learning_rate=0.001, rho=0.95, epsilon=1e-7,
    weight_decay=None (none), name=None ("adadelta")."""

    name = "adadelta"
    rule = "adadelta"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 rho: float = 0.95, epsilon: float = 1e-7, weight_decay: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating)) \
                or not 0 <= rho <= 1:
            raise ValueError(f"Expected rho in [0, 1]. Received: rho={rho!r}")
        _positive("epsilon", epsilon)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _slots(self) -> tuple[str, ...]:
        return ("accumulated_grads", "accumulated_delta_vars")

    def _hyper(self) -> dict[str, Any]:
        return {"rho": self.rho, "epsilon": self.epsilon}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Lion(Optimizer):
    """Lion, the sign of an interpolated momentum (Keras 3 rule):

        p := p - lr * sign(beta_1 * m + (1 - beta_1) * g)
        m := beta_2 * m + (1 - beta_2) * g

    (sign(0) = 0.)  The state is Keras' "momentum" (m), starting at 0.  beta_1 must lie in
    (0, 1] (ValueError otherwise; Keras' message says "[0, 1]" but refuses 0 too, which
    would make it SignSGD).  Defaults: learning_rate=0.001, beta_1=0.9, beta_2=0.99,
    weight_decay=None (none), name=None ("lion")."""

    name = "lion"
    rule = "lion"

    def __init__(self, learning_rate: float | LearningRateSchedule | Callable[[], float] = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.99, weight_decay: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, name=name, **kwargs)
        if isinstance(beta_1, bool) or not isinstance(beta_1, (int, float, np.floating)) \
                or not 0 < beta_1 <= 1:
            raise ValueError("Argument `beta_1` must be in the [0, 1] range. Otherwise, the "
                             f"optimizer degenerates to SignSGD. Received: beta_1={beta_1}.")
        if isinstance(beta_2, bool) or not isinstance(beta_2, (int, float, np.floating)) \
                or not 0 <= beta_2 <= 1:
            raise ValueError(f"Expected beta_2 in [0, 1]. Received: beta_2={beta_2!r}")
        self.beta_1, self.beta_2 = float(beta_1), float(beta_2)

    def _slots(self) -> tuple[str, ...]:
        return ("momentums",)

    def _hyper(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


_CLASSES: tuple[type[Optimizer], ...] = (SGD, Adagrad, RMSprop, Adam, AdamW, Nadam, Adamax,
                                         Adadelta, Lion)
_BY_NAME = {c.__name__.lower(): c for c in _CLASSES}


def get(identifier: str | Optimizer) -> Optimizer:
    """Resolve a name (any case: 'sgd', 'adagrad', 'rmsprop', 'adam', 'adamw', 'nadam',
    'adamax', 'adadelta', 'lion') or an Optimizer instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Expected optimizer to be one of {sorted(_BY_NAME)} or a "
                     f"fastnn.optimizers.Optimizer. Received: optimizer={identifier!r}")


def serialize(opt: Optimizer) -> dict[str, Any]:
    return {"class": type(opt).__name__, "config": opt.get_config(), "iterations": opt.calls}


_FLAGS = ("nesterov", "amsgrad", "centered", "staircase", "use_ema")  # the bool arguments of configs


def _config(cfg: Any, what: str) -> dict[str, Any]:
    """A config dict (e.g. from a saved file), its bool arguments checked to be bools."""
    if not isinstance(cfg, dict):
        raise TypeError(f"Expected the {what} config to be a dict. Received: {cfg!r}")
    for k in _FLAGS:
        if k in cfg and not isinstance(cfg[k], bool):
            raise TypeError(f"Expected {k} to be a bool. Received: {k}={cfg[k]!r}")
    return dict(cfg)


def deserialize(d: Any) -> Optimizer:
    """The optimizer `serialize` described, e.g. from a saved file.  The constructors check
    every hyper-parameter (ValueError/TypeError naming it), so a file is refused exactly as
    the same call would be."""
    if not isinstance(d, dict):
        raise TypeError(f"Expected an optimizer description {{'class', 'config', 'iterations'}}. "
                        f"Received: {d!r}")
    classes = {c.__name__: c for c in _CLASSES}
    if not isinstance(d.get("class"), str) or d["class"] not in classes:
        raise ValueError(f"Unknown optimizer class {d.get('class')!r} in the saved file")
    cfg = _config(d.get("config"), "optimizer")
    if cfg.get("name") is not None and not isinstance(cfg["name"], str):
        raise TypeError(f"Expected name to be a str. Received: name={cfg['name']!r}")
    opt = classes[d["class"]].from_config(cfg)
    iterations = d.get("iterations", 0)
    if isinstance(iterations, bool) or not isinstance(iterations, int) \
            or not 0 <= iterations < 2**63 - 1:  # the kernels count steps in an int64
        raise ValueError(f"Expected iterations to be an int in [0, 2**63 - 1). "
                         f"Received: iterations={iterations!r}")
    opt.calls = iterations
    return opt
