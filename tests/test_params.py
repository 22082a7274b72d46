"""Parameter validation: clear messages naming the parameter and the valid values."""
import pytest

from lib import params

OK = dict(dataset="ml-100k", seed=0, device="auto", smoke=True, output_dir="runs")


def test_valid_parameters_resolve():
    P = params.check(**OK, epochs=3, lr=0.01)
    assert P["device"] in ("cpu", "cuda") and P["dataset_dir"].name == "ml-100k"
    assert P["output_dir"].name == "runs"


@pytest.mark.parametrize("change, match", [
    (dict(dataset="ml-20m"), r"unknown dataset 'ml-20m': valid values are ml-100k or the path"),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), r"seed must be an integer"),
    (dict(device="tpu"), r"unknown device 'tpu'; valid: 'auto', 'cpu'"),
    (dict(smoke="yes"), r"smoke must be True or False"),
    (dict(output_dir="notebooks"), r"executed copies never overwrite the sources"),
])
def test_bad_common_parameters(change, match):
    with pytest.raises(params.ParamError, match=match):
        params.check(**{**OK, **change})


def test_bad_sizes_and_choices():
    with pytest.raises(params.ParamError, match=r"epochs must be a positive number, got -2"):
        params.check(**OK, epochs=-2)
    with pytest.raises(params.ParamError, match=r"hidden must be a positive number, got 0"):
        params.check(**OK, hidden=0)
    with pytest.raises(params.ParamError, match=r"unknown fusion 'sum'; valid values are 'gated', 'concat'"):
        params.check(**OK, choices={"fusion": ("sum", ("gated", "concat"))})


def test_missing_gpu_is_named():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(params.ParamError, match=r"device='cuda' but this machine has no CUDA GPU"):
        params.check(**{**OK, "device": "cuda"})


def test_weights_that_may_be_zero_and_optional_values():
    params.check(**OK, nonneg={"lambda_cl": 0.0, "guidance": 0}, optional={"decay_epochs": None})
    params.check(**OK, optional={"decay_epochs": 15})
    with pytest.raises(params.ParamError, match=r"lambda_cl must be a number >= 0 \(0 switches it off\), got -0.1"):
        params.check(**OK, nonneg={"lambda_cl": -0.1})
    with pytest.raises(params.ParamError, match=r"guidance must be a number >= 0.*got 'high'"):
        params.check(**OK, nonneg={"guidance": "high"})
    with pytest.raises(params.ParamError, match=r"decay_epochs must be None \(off\) or a positive number, got 0"):
        params.check(**OK, optional={"decay_epochs": 0})
