"""A pytest plugin that runs the peers' own test files against xent.

Loaded with ``-p xent_in_peers`` on a peer's installed test file, it replaces, in each test
module, the names of the functions and classes xent mirrors by xent's, before any test runs.
Everything else the tests use (their helpers, their expected values, other losses) stays
the peer's own.
"""

import functools
import types

import xent


def _keras_losses():
    from keras.src.losses import losses

    mirror = types.ModuleType("keras_losses_with_xent")
    mirror.__getattr__ = lambda name: getattr(losses, name)  # the rest stays Keras's
    for name in (
        "CategoricalCrossentropy",
        "SparseCategoricalCrossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    ):
        setattr(mirror, name, getattr(xent, name))
    return mirror


#: test file name -> {global name in the test module: factory of its xent replacement}
SUBSTITUTES = {
    "losses_test.py": {"losses": _keras_losses},
    "test_classification.py": {"log_loss": lambda: xent.log_loss},
}
#: test file name -> the peer's function, replaced wherever a module-level registry (a dict of
#: metrics, as scikit-learn's ``test_common.py`` keeps) holds it or a ``partial`` of it.
REGISTRIES = {"test_common.py": ("sklearn.metrics", "log_loss")}


def _swap_in_registries(module, peer, ours):
    for value in list(vars(module).values()):
        if not isinstance(value, dict):
            continue
        for key, f in value.items():
            if f is peer:
                value[key] = ours
            elif isinstance(f, functools.partial) and f.func is peer:
                value[key] = functools.partial(ours, *f.args, **f.keywords)


def pytest_collection_modifyitems(session, config, items):
    done = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or module in done:
            continue
        done.add(module)
        file = module.__file__.rsplit("/", 1)[-1]
        for name, make in SUBSTITUTES.get(file, {}).items():
            setattr(module, name, make())
        if file in REGISTRIES:
            package, name = REGISTRIES[file]
            peer = getattr(__import__(package, fromlist=[name]), name)
            _swap_in_registries(module, peer, getattr(xent, name))
