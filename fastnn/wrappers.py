"""scikit-learn wrappers, named as in `keras.wrappers`: SKLearnClassifier, SKLearnRegressor,
SKLearnTransformer.  They need scikit-learn >= 1.6 (`pip install scikit-learn`); importing this
module works without it, constructing a wrapper then raises ImportError.

    from fastnn import layers, models
    from fastnn.wrappers import SKLearnClassifier

    def build(X, y, hidden=16):           # y arrives one-hot: its width is the class count
        model = models.Sequential([layers.Dense(hidden, activation="relu"),
                                   layers.Dense(y.shape[1], activation="softmax")])
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        return model

    clf = SKLearnClassifier(build, model_kwargs={"hidden": 32}, fit_kwargs={"epochs": 20})
    clf.fit(X, y).score(X_test, y_test)

As in Keras 3, `model` is either a callable `model(X=X, y=y, **model_kwargs)` returning a
compiled `Sequential`, or a compiled `Sequential` instance, which each fit clones
(architecture and compile settings, fresh weights and optimizer state) unless
`warm_start=True`.  Keyword arguments of `fit` (and `fit_kwargs`) go to `Sequential.fit`.

Where fastnn goes beyond Keras' wrappers (each noted where it is done):
  * `SKLearnClassifier.predict_proba` (Keras has only `decision_function`);
  * `SKLearnRegressor` accepts 2-D targets (multi-output regression, which Keras' docstring
    promises but its input validation refuses) and returns float64 predictions;
  * `sklearn.base.clone` of a wrapper holding a model instance copies that model (weights and
    optimizer state included); Keras shares it between the clones and drops `fit_kwargs`;
  * fitted wrappers pickle (the model travels as its config, weights and optimizer state);
  * with `warm_start=True` a second fit keeps the first fit's classes and feature count;
  * a model compiled with `sparse_categorical_crossentropy` gets integer class codes instead
    of one-hot targets; `validation_data=(X_val, y_val)` in the fit arguments is encoded as
    the training targets are;
  * `history_` is the dict of per-epoch logs (`History.history`), as Keras documents it.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np

from fastnn import losses, optimizers, saving
from fastnn.models import Sequential

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray
    from typing_extensions import Self

__all__ = ["SKLearnClassifier", "SKLearnRegressor", "SKLearnTransformer"]

_MIN_SKLEARN = (1, 6)  # validate_data and __sklearn_tags__

_SKLEARN_VERSION: tuple[int, ...] | None
try:
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
    _SKLEARN_VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2] if p.isdigit())
except ImportError:  # the module still imports; constructing a wrapper says what is missing
    sklearn = None
    _SKLEARN_VERSION = None

    if not TYPE_CHECKING:  # (mypy checks the classes below against scikit-learn's)
        class BaseEstimator:
            pass

        class ClassifierMixin:
            pass

        class RegressorMixin:
            pass

        class TransformerMixin:
            pass


def _require_sklearn(name: str) -> None:
    if sklearn is None:
        raise ImportError(f"{name} requires scikit-learn. Install it with "
                          "`pip install scikit-learn`.")
    if cast("tuple[int, ...]", _SKLEARN_VERSION) < _MIN_SKLEARN:  # (set with sklearn)
        raise ImportError(f"{name} requires scikit-learn>=1.6. Received: scikit-learn "
                          f"{sklearn.__version__}; upgrade it with "
                          "`pip install -U scikit-learn`.")


# ---- copying models with fastnn's public API ---------------------------------------------------

def _model_state(model: Sequential, weights: bool = True) -> dict[str, Any]:
    """A fastnn Sequential as plain data (config, compile settings, optimizer; with
    weights=True also its weights and optimizer state): what `_model_from_state` rebuilds."""
    state: dict[str, Any] = {"class": type(model), "config": model._file_config(), "weights": None,
             "compile": None, "optimizer": None, "optimizer_variables": None, "loss": None,
             "jit_compile": model.jit_compile}
    if weights and model.built:
        state["weights"] = model.get_weights()
    if model.compiled:
        state["compile"] = model.get_compile_config()
        opt = optimizers.serialize(model.optimizer)
        if not weights:
            opt["iterations"] = 0  # a fresh optimizer, as after Keras' clone_model + compile
        elif model.optimizer.state is not None:
            state["optimizer_variables"] = [v.copy() for v in model.optimizer.variables]
        state["optimizer"] = opt
        try:  # a loss fastnn can name is rebuilt from its config, any other one is copied
            losses.from_config(state["compile"]["loss"])
        except (TypeError, ValueError):
            state["loss"] = copy.deepcopy(model.loss)
    return state


def _model_from_state(state: dict[str, Any]) -> Sequential:
    cfg = state["config"]
    # built once, at the end (each add() to a model with an input shape builds it again)
    model: Sequential = state["class"].from_config({**cfg, "input_shape": None})
    if cfg.get("input_shape"):
        model.build((None, *cfg["input_shape"]))
    if state["weights"] is not None:
        model.set_weights(state["weights"])
    if state["compile"] is not None:
        loss = state["loss"] if state["loss"] is not None else \
            losses.from_config(state["compile"]["loss"])
        model.compile(optimizer=optimizers.deserialize(state["optimizer"]), loss=loss,
                      metrics=saving.compiled_metrics(state["compile"]["metrics"]),
                      jit_compile=state["jit_compile"])
        if state["optimizer_variables"] is not None:
            for mine, saved in zip(model.build_optimizer(), state["optimizer_variables"]):
                mine[...] = saved
    return model


def _copy(model: Sequential, weights: bool) -> Sequential:
    try:
        return _model_from_state(_model_state(model, weights=weights))
    except (TypeError, ValueError) as e:
        raise type(e)(f"Cannot copy the model {model.name!r} from its configuration: {e} "
                      "Pass a function building the model as model= instead.") from e


def _clone_model(model: Sequential) -> Sequential:
    """A new, compiled copy of a fastnn Sequential with fresh weights and optimizer state (as
    `keras.models.clone_model` followed by compiling with the same settings): the same
    architecture (and seed), loss, metrics and optimizer configuration."""
    return _copy(model, weights=False)


def _copy_model(model: Sequential) -> Sequential:
    """A deep copy of a fastnn Sequential: architecture, weights, compile settings and
    optimizer state (a Sequential holds thread-local buffers, so copy.deepcopy cannot)."""
    return _copy(model, weights=True)


class _PickledModel:
    """A Sequential inside a pickled wrapper: plain data only."""

    def __init__(self, model: Sequential) -> None:
        try:
            self.state = _model_state(model, weights=True)
        except (TypeError, ValueError) as e:
            raise type(e)(f"Cannot pickle the model {model.name!r}: {e}") from e


def _clone_param(value: Any) -> Any:
    """A parameter as `sklearn.base.clone` copies it: model instances by `_copy_model`,
    callables (model builders) as they are, anything else deep-copied where possible and
    shared where not (e.g. a callback that has seen a model)."""
    if isinstance(value, Sequential):
        return _copy_model(value)
    if isinstance(value, dict):
        return {k: _clone_param(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_clone_param(v) for v in value)
    if callable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001  (not copyable: shared, as Keras shares every parameter)
        return value


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


# ---- the wrappers ----------------------------------------------------------------------------

class SKLBase(BaseEstimator):
    """Base class of the scikit-learn wrappers (as `keras.wrappers`' SKLBase).

    Args:
        model: a compiled `fastnn.models.Sequential`, or a callable returning one, called as
            `model(X=X, y=y, **model_kwargs)` with the validated inputs and the targets as the
            model is trained on them (one-hot for the classifier, 2-D for the regressor and
            the transformer), so that it can size its input and output layers from them.
            A model instance is cloned before each fit (same architecture and compile
            settings, fresh weights and optimizer state) unless `warm_start=True`.
        warm_start: bool, default False.  Reuse the model of the previous fit (and its
            weights): each fit continues training.  With a model instance, the first fit
            trains that instance itself.
        model_kwargs: dict or None.  Keyword arguments for `model` when it is a callable.
        fit_kwargs: dict or None.  Keyword arguments for `Sequential.fit` (epochs,
            batch_size, verbose, callbacks, validation_split, ...).  Keyword arguments
            given to the wrapper's `fit` take precedence over these.

    Attributes set by fit:
        model_: the trained Sequential.
        history_: dict, the per-epoch logs of the last fit (`History.history`).
        n_features_in_: number of features seen during fit (and `feature_names_in_` for
            a DataFrame with string column names).
        X_shape_, y_shape_: shapes of the validated X and y of the last fit.

    Models draw their initial weights, shuffling and dropout from their seed: a builder
    making `Sequential(..., seed=0)` gives reproducible fits, and an instance built with a
    seed gives every clone the same initial weights.
    """

    def __init__(self, model: Sequential | Callable[..., Sequential], warm_start: bool = False,
                 model_kwargs: dict[str, Any] | None = None,
                 fit_kwargs: dict[str, Any] | None = None) -> None:
        _require_sklearn(type(self).__name__)
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = True  # as Keras: a builder need not seed its models
        return tags

    def __sklearn_clone__(self) -> Self:
        """The estimator with the same parameters, unfitted: dicts deep-copied, a model
        instance copied with `_copy_model` (so clones never train one shared model), a
        builder callable passed as is."""
        params = {k: _clone_param(v) for k, v in self.get_params(deep=False).items()}
        new = type(self)(**params)
        for attr in ("_metadata_request", "_sklearn_output_config"):
            if attr in self.__dict__:
                setattr(new, attr, copy.deepcopy(self.__dict__[attr]))
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        saved: dict[int, _PickledModel] = {}  # one per model object: `model is model_` survives
        for key in ("model", "model_"):
            value = state.get(key)
            if isinstance(value, Sequential):
                if id(value) not in saved:
                    saved[id(value)] = _PickledModel(value)
                state[key] = saved[id(value)]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        built: dict[int, Sequential] = {}
        for key in ("model", "model_"):
            value = state.get(key)
            if isinstance(value, _PickledModel):
                if id(value) not in built:
                    built[id(value)] = _model_from_state(value.state)
                state[key] = built[id(value)]
        super().__setstate__(state)

    # -- fit --

    def _check_params(self) -> None:
        name = type(self).__name__
        for key in ("model_kwargs", "fit_kwargs"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"Expected {key} to be a dict or None. Received: "
                                f"{key}={_describe(value)}")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"Expected warm_start to be a bool. Received: "
                            f"warm_start={_describe(self.warm_start)}")
        if isinstance(self.model, Sequential):
            if self.model_kwargs:
                raise ValueError(f"model_kwargs are arguments for a callable model; {name} "
                                 f"received a Sequential instance as model and model_kwargs="
                                 f"{self.model_kwargs!r}. Pass a function building the model, "
                                 "or drop model_kwargs.")
        elif not callable(self.model):
            raise TypeError(f"Expected model to be a compiled fastnn.models.Sequential or a "
                            f"callable model(X, y, **model_kwargs) returning one. Received: "
                            f"model={_describe(self.model)}")

    def _get_model(self, X: NDArray[Any], y: NDArray[Any]) -> Sequential:
        if self.warm_start and hasattr(self, "model_"):
            return self.model_
        if isinstance(self.model, Sequential):
            return self.model if self.warm_start else _clone_model(self.model)
        model = self.model(X=X, y=y, **(self.model_kwargs or {}))
        if not isinstance(model, Sequential):
            raise TypeError(f"Expected model(X, y, **model_kwargs) to return a compiled "
                            f"fastnn.models.Sequential. Received: {_describe(model)} from "
                            f"{getattr(self.model, '__name__', repr(self.model))}")
        return model

    @staticmethod
    def _check_model(model: Sequential) -> None:
        if not model.compiled or model.loss is None or model.optimizer is None:
            raise RuntimeError("Given model needs to be compiled, and have a loss and an "
                               "optimizer: call model.compile(optimizer=..., loss=...) in the "
                               "model function, or before passing the instance.")

    # y as validate_data checks it: numeric, 1-D or 2-D (the classifier: 1-D, any labels)
    _y_checks: dict[str, Any] = {"multi_output": True, "y_numeric": True}

    def _validate_xy(self, X: Any, y: Any, reset: bool) -> tuple[NDArray[Any], NDArray[Any]]:
        from sklearn.utils.validation import validate_data
        Xy: tuple[NDArray[Any], NDArray[Any]] = validate_data(self, X, y, reset=reset,
                                                              **self._y_checks)
        return Xy

    def _encode_targets(self, y: NDArray[Any], reset: bool) -> NDArray[Any]:
        """y as the model trains on it (reset: learn the encoding from y)."""
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _fit_targets(self, model: Sequential, y_encoded: NDArray[Any]) -> NDArray[Any]:
        """The encoded targets in the form model's loss expects."""
        return y_encoded

    def fit(self, X: ArrayLike, y: ArrayLike | None, **kwargs: Any) -> Self:
        """Fit the model on (X, y).

        Args:
            X: array-like, shape (n_samples, n_features).
            y: array-like, shape (n_samples,) (or (n_samples, n_outputs) for the regressor
                and the transformer).
            **kwargs: keyword arguments for `Sequential.fit` (they take precedence over
                `fit_kwargs`).

        Returns:
            self
        """
        self._check_params()
        if y is None:
            # TransformerMixin.fit_transform calls fit(X) without y
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target "
                             "y is None.")
        continuing = self.warm_start and hasattr(self, "model_")
        X, y = self._validate_xy(X, y, reset=not continuing)
        t = self._encode_targets(y, reset=not continuing)
        model = self._get_model(X, t)
        self._check_model(model)
        fit_kwargs = {**(self.fit_kwargs or {}), **kwargs}
        if fit_kwargs.get("validation_data") is not None:
            fit_kwargs["validation_data"] = self._encode_validation(
                model, fit_kwargs["validation_data"])
        history = model.fit(X, self._fit_targets(model, t), **fit_kwargs)
        self.model_ = model
        self.history_ = {k: list(v) for k, v in history.history.items()}
        self.X_shape_, self.y_shape_ = X.shape, y.shape
        return self

    def _encode_validation(self, model: Sequential,
                           data: Any) -> tuple[NDArray[Any], NDArray[Any]]:
        from sklearn.utils.validation import validate_data
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(f"Expected validation_data to be a tuple (X_val, y_val). "
                             f"Received: {type(data).__name__}")
        X_val = validate_data(self, data[0], reset=False)
        y_val = self._check_y_val(data[1])
        return X_val, self._fit_targets(model, self._encode_targets(y_val, reset=False))

    def _check_y_val(self, y: Any) -> NDArray[Any]:
        from sklearn.utils.validation import check_array
        y_val: NDArray[Any] = check_array(y, ensure_2d=False, dtype="numeric",
                                          input_name="y_val")
        return y_val

    # -- predict --

    def _raw_predict(self, X: ArrayLike) -> NDArray[Any]:
        from sklearn.utils.validation import check_is_fitted, validate_data
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.model_.predict(X, verbose=0)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Predict using the model: shape (n_samples,) when fit had 1-D targets."""
        raw = self._raw_predict(X)
        if len(self.y_shape_) == 1 and raw.ndim == 2 and raw.shape[1] == 1:
            return raw[:, 0]
        return raw


class SKLearnClassifier(ClassifierMixin, SKLBase):
    """scikit-learn classifier wrapping a fastnn model (as `keras.wrappers.SKLearnClassifier`).

    The targets are one-hot encoded (sklearn's OneHotEncoder, classes in sorted order, two
    columns for a binary problem), so the model needs one output per class: `model` receives
    the one-hot y and can take the width from `y.shape[1]`.  Binary and multiclass targets
    only; a model compiled with sparse_categorical_crossentropy is given integer class codes.

    Methods beyond fit: `predict` (classes_[argmax of the outputs]), `predict_proba`,
    `decision_function` (the raw outputs, as in Keras), `score` (accuracy).

    Arguments and attributes: see `SKLBase`; fit also sets `classes_`.
    """

    _y_checks: dict[str, Any] = {}  # y 1-D (a column vector warns and is flattened), as Keras

    def _encode_targets(self, y: NDArray[Any], reset: bool) -> NDArray[Any]:
        from sklearn.preprocessing import OneHotEncoder
        from sklearn.utils.multiclass import type_of_target
        target_type = type_of_target(y, input_name="y", raise_unknown=True)
        if target_type not in ("binary", "multiclass"):
            raise ValueError(f"Only binary and multiclass target types are supported. "
                             f"Target type: {target_type}")
        if reset:
            classes = np.unique(y)
            if len(classes) == 1:
                raise ValueError("Classifier can't train when only one class is present. "
                                 f"Received: y with the single class {classes[0]!r}")
            self._target_encoder = OneHotEncoder(sparse_output=False, dtype=np.float32).fit(
                y.reshape(-1, 1))
            self.classes_ = self._target_encoder.categories_[0]
        encoded: NDArray[Any] = self._target_encoder.transform(y.reshape(-1, 1))
        return encoded

    def _fit_targets(self, model: Sequential, y_encoded: NDArray[Any]) -> NDArray[Any]:
        if getattr(model.loss, "sparse", False):  # sparse_categorical_crossentropy: codes
            codes: NDArray[Any] = np.argmax(y_encoded, axis=1)
            return codes
        if model.built and cast("tuple[int, ...]", model.output_shape)[-1] != y_encoded.shape[1]:
            raise ValueError(f"Expected the model to have one output per class: "
                             f"{y_encoded.shape[1]} (classes {list(self.classes_)!r}; "
                             f"{type(self).__name__} one-hot encodes y). Received: a model "
                             f"with output shape {model.output_shape}")
        return y_encoded

    def _check_y_val(self, y: Any) -> NDArray[Any]:
        from sklearn.utils.validation import column_or_1d
        y_val: NDArray[Any] = column_or_1d(y, warn=True)
        return y_val

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The predicted classes: classes_[argmax of the model's outputs], shape (n_samples,)."""
        raw = self._raw_predict(X)  # first: it checks that the estimator is fitted
        classes: NDArray[Any] = self.classes_[np.argmax(raw, axis=1)]
        return classes

    def decision_function(self, X: ArrayLike) -> NDArray[Any]:
        """The model's raw outputs, shape (n_samples, n_classes) (as Keras: probabilities or
        logits, whatever the last layer gives; two columns for a binary problem)."""
        return self._raw_predict(X)

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities, shape (n_samples, n_classes), columns in `classes_` order,
        rows summing to 1 (float64).  (fastnn: Keras' wrapper has no predict_proba.)

        For a model compiled with `from_logits=True` the softmax of its outputs; otherwise
        its outputs (softmax or sigmoid scores) clipped at 0 and divided by their row sum (a
        no-op up to rounding for a softmax output); a row of zeros becomes uniform."""
        raw = self._raw_predict(X).astype(np.float64)
        if getattr(self.model_.loss, "from_logits", False):
            z = np.exp(raw - raw.max(axis=1, keepdims=True))
            softmax: NDArray[np.float64] = z / z.sum(axis=1, keepdims=True)
            return softmax
        p = np.clip(raw, 0.0, None)
        total = p.sum(axis=1, keepdims=True)
        zero = total[:, 0] == 0
        p[zero], total[zero] = 1.0, p.shape[1]
        proba: NDArray[np.float64] = p / total
        return proba

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # as Keras: few epochs need not fit well
        return tags


class SKLearnRegressor(RegressorMixin, SKLBase):
    """scikit-learn regressor wrapping a fastnn model (as `keras.wrappers.SKLearnRegressor`).

    `model` receives y as 2-D (n_samples, n_outputs), so it can take its output width from
    `y.shape[1]`.  (fastnn: y may be 2-D, multi-output regression, and predictions are
    float64 as scikit-learn's regressors give them; Keras refuses 2-D y and returns the
    model's float32.)  `predict` has the shape of the fit's y; `score` is R².

    Arguments and attributes: see `SKLBase`.
    """

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """The model's outputs, float64, shape (n_samples,) when fit had 1-D y, else
        (n_samples, n_outputs)."""
        return np.asarray(super().predict(X), dtype=np.float64)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        tags.target_tags.multi_output = True
        return tags


class SKLearnTransformer(TransformerMixin, SKLBase):
    """scikit-learn transformer wrapping a fastnn model (as
    `keras.wrappers.SKLearnTransformer`): fit trains the model on (X, y), `transform(X)` is
    the model's outputs, e.g. an embedding to feed another estimator in a Pipeline (wrap a
    trained one in `sklearn.frozen.FrozenEstimator` to keep a pipeline from refitting it).

    Arguments and attributes: see `SKLBase`.
    """

    def fit(self, X: ArrayLike, y: ArrayLike | None = None, **kwargs: Any) -> Self:
        """Fit the model on (X, y); y is required (None is refused with a ValueError, e.g.
        from `fit_transform(X)`).  See `SKLBase.fit`."""
        return super().fit(X, y, **kwargs)

    def transform(self, X: ArrayLike) -> NDArray[Any]:
        """The model's outputs for X, shape (n_samples, n_outputs), in the model's dtype."""
        return self._raw_predict(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # as Keras: the model's dtype
        tags.target_tags.required = True  # the model is trained on (X, y)
        return tags
