"""The fold's Keras network: built as the config says, with names no other thread can clash with."""

from __future__ import annotations

import pytest

from tasks.config import ModelConfig
from tasks.model import build_model


@pytest.mark.parametrize(
    ("changes", "activity", "kernel", "dropouts"),
    [
        ({}, 2, 0, 0),  # the notebook: L1 activity on both hidden layers
        ({"regularizer": "l2", "regularizer_on": "kernel"}, 0, 2, 0),
        ({"regularizer": "none", "dropout": 0.5}, 0, 0, 2),
        ({"regularizer": "l1_l2", "hidden_units": [8, 8, 8]}, 3, 0, 0),
    ],
)
def test_build_model_follows_the_config(changes, activity, kernel, dropouts):
    import keras

    model = build_model(47, 7, ModelConfig(**changes), seed=1)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert sum(layer.activity_regularizer is not None for layer in dense) == activity
    assert sum(layer.kernel_regularizer is not None for layer in dense) == kernel
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in model.layers) == dropouts
    assert dense[-1].units == 7 and dense[-1].activation.__name__ == "softmax"
    if not changes:
        assert [d.units for d in dense] == [50, 25, 7]
        assert model.count_params() == (47 * 50 + 50) + (50 * 25 + 25) + (25 * 7 + 7)


def test_layer_names_do_not_depend_on_what_keras_built_before():
    """Automatic names come from a counter another thread's `clear_session` can reset mid-build."""
    import keras

    def names():
        return [layer.name for layer in build_model(9, 3, ModelConfig(), seed=1).layers]

    keras.layers.Dense(1), keras.layers.Dense(1)  # the process's counter moves on
    before = names()
    keras.backend.clear_session()  # ... and goes back to zero
    assert before == names() == ["hidden_1", "hidden_2", "output"]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_saved_model_fits_the_size_the_free_space_check_assumes(optimizer):
    """The up-front disk check sizes a .keras file from a count of parameters: the count is
    Keras's own, and a trained model's file is no larger than the size assumed."""
    import numpy as np

    from tasks.bundle import KERAS_BYTES_PER_PARAMETER, KERAS_FILE_OVERHEAD
    from tasks.model import count_parameters, model_to_bytes

    config = ModelConfig(hidden_units=[64, 32], optimizer=optimizer)
    net = build_model(47, 7, config, seed=1)
    parameters = count_parameters(47, 7, [64, 32])
    assert parameters == net.count_params()
    rng = np.random.default_rng(0)
    net.fit(rng.normal(size=(64, 47)), np.eye(7)[rng.integers(0, 7, 64)], epochs=1, verbose=0)
    size = len(model_to_bytes(net))  # with the optimizer's slots, built by training
    assert parameters * 4 < size <= parameters * KERAS_BYTES_PER_PARAMETER + KERAS_FILE_OVERHEAD


def test_networks_of_one_architecture_share_a_float64_twin_and_score_as_if_alone():
    """The twin is reused across folds; every weight is set per call, so a network's outputs
    do not hang on which network was scored before it."""
    import numpy as np

    from tasks import model as model_module
    from tasks.model import infer

    rows = np.random.default_rng(0).normal(size=(40, 9))
    first = build_model(9, 3, ModelConfig(), seed=1)
    second = build_model(9, 3, ModelConfig(), seed=2)
    wider = build_model(9, 3, ModelConfig(hidden_units=[8]), seed=1)

    def alone(net):
        model_module._WIDE_NETS.clear()
        return infer(net, rows)

    expected = {name: alone(net) for name, net in [("1", first), ("2", second), ("w", wider)]}
    model_module._WIDE_NETS.clear()
    shared = {"1": infer(first, rows), "2": infer(second, rows), "w": infer(wider, rows)}
    assert len(model_module._WIDE_NETS) == 2  # one twin for both default networks
    for name, values in expected.items():
        assert values.dtype == np.float64
        np.testing.assert_array_equal(shared[name], values)
    assert not np.array_equal(shared["1"], shared["2"])  # the seeds made different networks
    np.testing.assert_array_equal(infer(first, rows), expected["1"])  # after another one
