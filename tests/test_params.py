"""Parameter validation: clear messages naming the parameter and the valid values."""
import pytest

from lib import params

OK = dict(dataset="ml-100k", seed=0, device="auto", smoke=True, output_dir="runs")


def test_valid_parameters_resolve():
    P = params.check(**OK, epochs=3, lr=0.01)
    assert P["device"] in ("cpu", "cuda") and P["dataset_dir"].name == "ml-100k"
    assert P["output_dir"].name == "runs"


@pytest.mark.parametrize("change, match", [
    (dict(dataset="ml-20m"), r"unknown dataset 'ml-20m'.*: valid values are ml-100k or the path"),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(seed=1.5), r"seed must be an integer"),
    (dict(device="tpu"), r"unknown device 'tpu'; valid: 'auto', 'cpu'"),
    (dict(smoke="yes"), r"smoke must be True or False"),
    (dict(output_dir="notebooks"), r"executed copies never overwrite the sources"),
    (dict(dataset=100), r"^dataset must be text .*got 100 of type int; quote it in the parameters cell "
                        r"\(dataset = \"100\"\)$"),
    (dict(output_dir=5), r"^output_dir must be text .*got 5 of type int"),
    (dict(output_dir=None), r"^output_dir must be text .*got None"),
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


def test_integers_fractions_flags_and_rules():
    params.check(**OK, integers={"T": (2, 2), "threads": (0, 0)}, fractions={"dropout": 0.0}, flags={"probe": False},
                 rules=[(lambda: True, "never")])
    with pytest.raises(params.ParamError, match=r"T must be an integer >= 2, got 1"):
        params.check(**OK, integers={"T": (1, 2)})
    for bad in (2.0, True, "2"):
        with pytest.raises(params.ParamError, match=r"T must be an integer >= 2"):
            params.check(**OK, integers={"T": (bad, 2)})
    for bad in (1.0, -0.1, None):
        with pytest.raises(params.ParamError, match=r"dropout must be a number in \[0, 1\)"):
            params.check(**OK, fractions={"dropout": bad})
    with pytest.raises(params.ParamError, match=r"probe must be True or False, got 1"):
        params.check(**OK, flags={"probe": 1})
    # a rule runs after every single value passed, so it may compare them; its message is the error
    with pytest.raises(params.ParamError, match=r"^joint_updates must be at most batch_size$"):
        params.check(**OK, rules=[(lambda: True, "fine"), (lambda: 3 <= 2, "joint_updates must be at most batch_size")])
    with pytest.raises(params.ParamError, match=r"batch_size must be a positive number"):
        params.check(**OK, batch_size="x", rules=[(lambda: 3 <= "x", "unreachable: the size check comes first")])


def test_apply_preset_sets_the_notebooks_parameters():
    stem = "evidence/06_hdrec_dual_lora"
    names = set(params.defaults(stem))
    for name, values in params.PRESETS[stem].items():
        assert set(values) <= names, (name, set(values) - names)
    ns = dict(params.defaults(stem))
    assert params.apply_preset(ns, stem, "laptop") == {} and ns == params.defaults(stem)
    set_ = params.apply_preset(ns, stem, "paper-scale")
    assert ns["llm_layers"] is None and ns["steps"] >= 1000 and ns["L"] == 20 and set_ == params.PRESETS[stem]["paper-scale"]
    assert ns["seed"] == 0 and ns["lam"] == params.defaults(stem)["lam"], "the others are left alone"
    with pytest.raises(params.ParamError, match=r"unknown preset 'gpu' for evidence/06_hdrec_dual_lora; valid values are "
                                                r"'laptop', 'paper-scale'"):
        params.apply_preset(ns, stem, "gpu")
    with pytest.raises(params.ParamError, match=r"this notebook has no presets"):
        params.apply_preset({}, "01_sasrec_baseline", "laptop")


def test_a_preset_naming_no_parameter_is_refused(monkeypatch):
    monkeypatch.setitem(params.PRESETS, "evidence/06_hdrec_dual_lora", {"typo": {"stepz": 3}})
    with pytest.raises(params.ParamError, match=r"sets \['stepz'\], which are not parameters"):
        params.apply_preset({}, "evidence/06_hdrec_dual_lora", "typo")
