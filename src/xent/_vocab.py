"""Options for large-vocabulary models, shared by every logits front end.

* ``z_loss=s`` adds ``s * lse**2`` per counted element (PaLM's z-loss, Liger's
  ``lse_square_scale``); ``return_z_loss=True`` also returns that term on its own (the
  loss still includes it), for logging.
* ``softcap=c`` computes the loss on ``c * tanh(z / c)`` (Gemma-style soft-capping),
  inside the kernel's pass: no capped copy of the logits.
* ``return_lse=True`` also returns each row's log-sum-exp (of the capped logits).

The log-sum-exp is a by-product of the kernels' single pass, so none of these adds a pass
over the logits or an N x C temporary; they are O(N) formulas over per-row statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xent._engine import RowOptions
from xent._inputs import check_real


@dataclass(frozen=True)
class LargeVocab:
    """Validated large-vocabulary options."""

    z_loss: float = 0.0
    softcap: float = 0.0  # 0: no soft-capping
    return_lse: bool = False
    return_z_loss: bool = False

    @property
    def want_lse(self) -> bool:
        """Whether the kernel must write the per-row log-sum-exp."""
        return self.return_lse or self.return_z_loss or self.z_loss != 0.0

    @property
    def extra_outputs(self) -> bool:
        return self.return_lse or self.return_z_loss

    def row_options(self, **fields) -> RowOptions:
        """The engine's options for a call: these per-element options plus the front end's
        own ``fields`` (smoothing, class weights, masks, ...)."""
        return RowOptions(softcap=self.softcap, want_lse=self.want_lse, **fields)


def check_large_vocab(z_loss, softcap, return_lse, return_z_loss, *, from_logits=True):
    """Validate the options; they need logits (``from_logits=True``)."""
    opts = LargeVocab(
        z_loss=check_real(z_loss, "z_loss"),
        softcap=0.0 if softcap is None else check_real(softcap, "softcap", positive=True),
        return_lse=bool(return_lse),
        return_z_loss=bool(return_z_loss),
    )
    if not from_logits and (opts.want_lse or opts.softcap):
        raise ValueError(
            "z_loss, softcap, return_lse and return_z_loss apply to logits; "
            "pass from_logits=True (probabilities have no log-sum-exp)"
        )
    return opts


def z_terms(lse: np.ndarray | None, opts: LargeVocab, counted) -> np.ndarray | None:
    """Per-row ``s * lse**2`` (0 where ``counted`` is False); ``None`` without z-loss output."""
    if lse is None or not (opts.z_loss or opts.return_z_loss):
        return None
    z = (opts.z_loss * np.square(lse.astype(np.float64))).astype(lse.dtype)
    if counted is not None:
        z = np.where(counted, z, lse.dtype.type(0.0))
    return z


def package(loss, z, lse, opts: LargeVocab):
    """``loss``, or ``(loss, z_loss)``, ``(loss, lse)``, ``(loss, z_loss, lse)`` as asked."""
    if not opts.extra_outputs:
        return loss
    out = [loss]
    if opts.return_z_loss:
        out.append(z)
    if opts.return_lse:
        out.append(lse)
    return tuple(out)


def finish(loss, lse, counted, opts: LargeVocab, batch_shape):
    """Per-element outputs of a front end: ``loss`` plus the z-loss where ``counted`` (flat
    bool per row, or ``None`` for all), reshaped to ``batch_shape`` and packaged as asked."""
    z = z_terms(lse, opts, counted)
    if z is not None and opts.z_loss:
        loss = loss + z
    shape = tuple(batch_shape)
    return package(
        loss.reshape(shape),
        None if z is None else z.reshape(shape),
        None if lse is None else lse.reshape(shape),
        opts,
    )
