"""Trainer defects found by an adversarial run, each a regression test (they failed before
the fix): float32-finite hyper-parameters, checkpoint validation (NaN or negative Adam
moments, non-eggroll files, settings and shapes of the torch ES), stale temporary files of
killed saves, the file mode of a checkpoint, and NaN fitness in eggroll.jax.ES."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

import eggroll

P = {"W": np.ones((3, 4), np.float32), "b": np.zeros(3, np.float32)}


@pytest.mark.parametrize("kw,name", [(dict(lr=1e39), "lr"), (dict(adam_eps=1e-50), "adam_eps"),
                                     (dict(weight_decay=1e39), "weight_decay"),
                                     (dict(sigma=1e-50), "sigma")])
def test_hyper_parameters_finite_in_float64_but_not_float32_are_rejected(kw, name):
    """lr=1e39 or adam_eps=1e-50 are finite doubles but inf / 0 in float32, the precision of
    the step: every parameter became inf or NaN after one tell()."""
    args = dict(sigma=0.1, lr=0.1, population=4, optimizer="adam")
    args.update(kw)
    with pytest.raises(ValueError, match=f"^{name}:"):
        eggroll.ES(P, **args)


def test_lr_schedule_is_checked_in_float32_too():
    es = eggroll.ES(P, sigma=0.1, lr=lambda e: 1e39, population=4)
    with pytest.raises(ValueError, match="^lr"):
        es.tell(np.arange(4.0))


@pytest.mark.parametrize("value", [np.nan, -1.0])
def test_load_rejects_nan_or_negative_adam_moments(value, tmp_path):
    es = eggroll.ES(P, sigma=0.1, lr=0.1, population=4, optimizer="adam")
    es.tell(np.arange(4.0))
    state = es.state_dict()
    state["adam_v"]["W"][0, 0] = value
    with pytest.raises(ValueError, match=r"^state: adam_v\['W'\] must be finite"):
        eggroll.ES.from_state_dict(state)
    state = es.state_dict()
    state["adam_m"]["b"][1] = np.nan
    es2 = eggroll.ES(P, sigma=0.1, lr=0.1, population=4, optimizer="adam")
    path = tmp_path / "ck.npz"
    from eggroll.checkpoint import save
    save(state, path)
    with pytest.raises(ValueError, match=r"^state: adam_m\['b'\] must be finite"):
        eggroll.ES.load(path)
    assert es2.epoch == 0


def test_load_of_a_non_eggroll_npz_is_a_named_error(tmp_path):
    """It was "can only convert an array of size 1 to a Python scalar"."""
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones((3, 4)), epoch=np.arange(3))
    with pytest.raises(ValueError, match="^path: .* is not an eggroll.ES checkpoint"):
        eggroll.ES.load(path)
    np.savez(path, format=np.array("eggroll.ES"), epoch=np.arange(3))
    with pytest.raises(ValueError, match="^path: entry 'epoch' has shape"):
        eggroll.ES.load(path)


def test_save_removes_stale_temporary_files_and_honours_the_umask(tmp_path):
    """A save killed before its rename left .<name>.*.tmp behind forever; and checkpoints
    were mode 0600 whatever the umask."""
    path = tmp_path / "ck.npz"
    stale = tmp_path / ".ck.npz.abc123.tmp"
    stale.write_bytes(b"partial")
    other = tmp_path / ".other.npz.abc.tmp"        # another checkpoint's: left alone
    other.write_bytes(b"x")
    es = eggroll.ES(P, sigma=0.1, lr=0.1, population=4)
    old = os.umask(0o022)
    try:
        es.save(path)
    finally:
        os.umask(old)
    assert not stale.exists() and other.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert eggroll.ES.load(path).epoch == 0


torch = pytest.importorskip("torch")


def _torch_es():
    import eggroll.torch as et
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    return et.ES(model, sigma=0.1, population=4), model


@pytest.mark.parametrize("key,value,exc", [
    ("shaping", "bogus", ValueError), ("antithetic", "yes", TypeError),
    ("noise_reuse", -1, ValueError), ("group_size", 3.5, TypeError),
    ("nonfinite", "ignore", ValueError), ("full_rank", 1, TypeError)])
def test_torch_load_state_dict_validates_the_settings(key, value, exc):
    """shaping="bogus" trained silently on raw fitness; every setting is now the
    constructor's check."""
    es, _ = _torch_es()
    state = es.state_dict()
    state[key] = value
    with pytest.raises(exc, match=rf"^state\['{key}'\]:"):
        es.load_state_dict(state)


def test_torch_load_state_dict_of_a_differently_shaped_model_fails():
    es, _ = _torch_es()
    state = es.state_dict()
    state["shapes"] = dict(state["shapes"], **{"0.weight": (5, 4)})
    with pytest.raises(ValueError, match=r"^state: parameter '0.weight' has shape"):
        es.load_state_dict(state)


def test_jax_es_nan_fitness_is_a_value_error():
    """Concrete NaN fitness in eggroll.jax.ES: a ValueError naming it (it was a
    JaxRuntimeError whose type depended on the call history)."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    import eggroll.jax as ej
    params = {"W": jnp.ones((3, 4)), "b": jnp.zeros(3)}
    es = ej.ES(params, sigma=0.1, population=4)
    with pytest.raises(ValueError, match="NaN or inf"):
        es.gradient(params, jnp.array([1.0, jnp.nan, 0.0, 2.0]), 0)
