"""MoE-MLIR: a compiler for Mixture-of-Experts layers.

* :func:`load_spec`, :func:`weight_shapes`, :func:`spec_hash` -- layer specs.
* :mod:`moe_mlir.reference` -- independent NumPy reference of every layer kind.
* :func:`upcycle` -- build MoE expert weights from a dense FFN.
"""

from . import reference, rng
from .reference import round_to_dtype
from .spec import load_spec, spec_hash, weight_shapes
from .upcycle import init_gate, upcycle

__version__ = "0.1.0"

__all__ = [
    "reference",
    "rng",
    "load_spec",
    "weight_shapes",
    "spec_hash",
    "round_to_dtype",
    "upcycle",
    "init_gate",
    # "compile",
]

# --------------------------------------------------------------------------- #
# Compiler entry point (added by the lead): `compile(spec, target=...)` returns
# a callable layer `layer(x, **weights)`.  Import it here and add "compile" to
# __all__ above, e.g.
#     from .compiler import compile  # noqa: A001
# --------------------------------------------------------------------------- #
