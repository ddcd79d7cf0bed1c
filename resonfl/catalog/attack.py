"""A Byzantine site for robustness tests and the results table: model_def.py, wrapped.

`byzantine_source` appends a wrapper to a job's model_def.py: after the honest train function,
the named site replaces its weights by ``global + scale x (weights - global)`` (``scale=-10``:
sign-flipped and ten times longer). The attack lives in the job's own code, so it runs the
same on the platform, in the simulator and in process, through the real executor.
"""

from __future__ import annotations

ATTACK = """

# --- resonfl.catalog.attack: site {site!r} sends global + {scale!r} x its update ---
_honest_train_fn = {train_fn}


def {train_fn}(model, env, out_dir, logger):
    result = _honest_train_fn(model, env, out_dir, logger)
    if env.site_name == {site!r}:
        import torch as _torch

        with _torch.no_grad():
            for _name, _tensor in model.state_dict().items():
                if _tensor.is_floating_point():
                    _start = env.global_state[_name].to(_tensor.device, _tensor.dtype)
                    _tensor.copy_(_start + {scale!r} * (_tensor - _start))
        logger.warning("attack: this site sent global + %s x its update", {scale!r})
    return result
"""


def byzantine_source(
    source: str, site: str, scale: float = -10.0, train_fn: str = "fl_train_model"
) -> str:
    """``source`` with ``site`` turned into an attacker (see the module docstring)."""
    return source + ATTACK.format(site=site, scale=float(scale), train_fn=train_fn)


__all__ = ["byzantine_source"]
