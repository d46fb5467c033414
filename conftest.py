"""Collection rules for the whole checkout: the modules that import an optional peer at their
top (``src/xent/torch.py``, the autograd Function, the JAX custom VJP) are collected for
doctests only where that peer is installed (the README's test command installs them with the
``peers`` extra, so CI collects them)."""

import importlib.util

_NEEDS = {
    "src/xent/torch.py": "torch",
    "src/xent/_torch_autograd.py": "torch",
    "src/xent/_jax_autodiff.py": "jax",
}
collect_ignore = [path for path, peer in _NEEDS.items() if importlib.util.find_spec(peer) is None]
