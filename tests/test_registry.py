"""One `Registry` per component family, and a new encoder as one file (tests/toy_encoder.py): registered,
it trains from a shipped config at the `tiny` preset, its knobs are searched, the training benchmark
measures it and `eri list` describes it, with no other file touched."""

from __future__ import annotations

import importlib
import math
import sys

import pytest
import torch
from conftest import tiny_overrides

from eri.constants import EMOTIONS
from eri.errors import ConfigError
from eri.models.encoders import ENCODERS
from eri.registry import Registry, build

TINY_SEARCH = "configs/search/tiny.yaml"


@pytest.fixture(scope="module")
def toy():
    """Import tests/toy_encoder.py (which registers ``toy_mean``); unregistered afterwards, so other
    tests see the shipped encoders only."""
    sys.modules.pop("toy_encoder", None)
    module = importlib.import_module("toy_encoder")
    yield module.ToyMean
    ENCODERS.remove("toy_mean")
    sys.modules.pop("toy_encoder", None)


class Widget:
    """A widget for the registry's own tests."""

    def __init__(self, size: int = 1, colour: str = "red"):
        self.size, self.colour = size, colour


def test_a_registry_reads_like_a_mapping_and_says_what_is_wrong_in_one_line():
    reg = Registry("widget")
    reg.register("plain", presets={"tiny": {"size": 2}}, knobs={"width": "size"})(Widget)
    reg.add("lazy", "eri.constants.StreamSpec", description="imported on first use")
    assert list(reg) == ["plain", "lazy"] and "lazy" in reg and len(reg) == 2 and "other" not in reg
    assert isinstance(reg.entry("lazy").target, str)  # listing and membership import nothing
    assert reg["plain"] is Widget and reg.entry("plain").description == "A widget for the registry's own tests"
    assert reg.presets["plain"] == {"tiny": {"size": 2}} and "lazy" not in reg.presets
    assert reg.config_keys("plain") == ["size", "colour"]
    assert reg.build({"name": "plain", "size": 3}).size == 3
    with pytest.raises(ConfigError, match=r"^here: unknown widget 'nope'; valid: \['lazy', 'plain'\]$"):
        reg.build({"name": "nope"}, "here")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sise'\] for widget 'plain'; valid keys: \['name', 'size'"):
        reg.build({"name": "plain", "sise": 3})
    with pytest.raises(ValueError, match="already registered"):
        reg.add("plain", dict)
    with pytest.raises(ValueError, match=r"preset 'tiny' names \['sise'\]"):
        reg.add("typo", Widget, presets={"tiny": {"sise": 2}})
    with pytest.raises(ValueError, match=r"knobs names \['width'\]"):
        reg.add("typo", Widget, knobs={"width": "width"})
    with pytest.raises(TypeError):
        reg["x"] = Widget  # read-only: written through register / add only
    # the plain-dict form of `build` (extractor tests use it) is unchanged
    assert build({"w": Widget}, "widget", {"name": "w", "colour": "blue"}).colour == "blue"


def test_every_family_is_a_registry_and_the_ensemble_schema_agrees():
    from eri.commands.components import families
    from eri.ensembles.combiners import COMBINERS
    from eri.ensembles.config import COMBINER_NAMES

    registries = {f for f, table in families().items() if isinstance(table, Registry)}
    assert registries >= {"encoders", "fusions", "extractors", "combiners", "mma-backbones", "losses", "optimizers",
                          "mma-datasets"}
    assert set(COMBINER_NAMES) == set(COMBINERS)  # config.rule choices of `combiner`


def test_a_new_encoder_trains_from_a_shipped_config_at_a_preset(toy, tiny_root, tmp_path):
    from eri.config import load_config
    from eri.models.spec import ModelSpec
    from eri.training.run import train

    overrides = tiny_overrides(tiny_root, tmp_path, "model.preset=tiny", "trainer.max_epochs=1", "data.batch_size=8",
                               "model.branches.0.encoder={name: toy_mean}")  # the whole encoder: the demo's carries gru_transformer choices
    cfg = load_config("configs/demo.yaml", overrides)
    assert dict(cfg.model.branches[0].encoder) == {"name": "toy_mean", "hidden": 8}  # its tiny preset, expanded
    metrics = train(cfg, quiet=True)
    assert math.isfinite(metrics["val"]["mean_pcc"])
    spec = ModelSpec.from_checkpoint(torch.load(tmp_path / "model.ckpt", weights_only=True)["eri_model"])
    assert isinstance(spec.build().branches["holistic"].encoder, toy)  # the checkpoint rebuilds it by name
    # and predicts from the model file alone, as any model does
    from eri.inference.predictor import load_model

    predictor = load_model(tmp_path / "model.ckpt")
    pred = predictor.predict_features(tiny_root)
    assert isinstance(predictor.model.branches["holistic"].encoder, toy) and len(pred) > 0
    assert pred[list(EMOTIONS)].notna().all().all()


def test_a_new_encoder_knobs_are_searched(toy):
    from optuna.trial import FixedTrial

    from eri.search.space import SPACE_KEYS, Space
    from eri.search.study import load_search_config

    assert SPACE_KEYS["toy_activation"] == "per branch: toy_mean.activation"
    scfg = load_search_config(TINY_SEARCH, ["space.encoder=[gru_transformer, toy_mean]", "space.toy_activation=[relu, tanh]"])
    space = Space(scfg)
    # a fixed trial refuses any parameter it was not given: the toy's absent knobs (dropout) are not suggested
    params = space.sample(FixedTrial({"streams": "au", "au.encoder": "toy_mean", "au.hidden": 32,
                                      "au.toy_activation": "tanh", "fusion": "concat", "lr": 1e-3, "loss_pcc": 0.5}))
    assert {k for k in params if k.startswith("au.")} == {"au.encoder", "au.hidden", "au.toy_activation"}
    cfg = space.trial_config(space.updates(params), "x")
    assert dict(cfg.model.branches[0].encoder) == {"name": "toy_mean", "hidden": 32, "activation": "tanh"}
    # the gru_transformer branch of the same space still gets the shared knobs, and not the toy's
    params = space.sample(FixedTrial({"streams": "au", "au.encoder": "gru_transformer", "au.hidden": 16,
                                      "au.dropout": 0.1, "fusion": "concat", "lr": 1e-3, "loss_pcc": 0.5}))
    assert "au.toy_activation" not in params and params["au.dropout"] == 0.1


def test_a_new_encoder_is_benchmarked(toy):
    from eri.benchmarks.training import _measure, _modules, bench_model, benchmark_encoders, run_one

    assert benchmark_encoders("tiny")[-1] == "toy_mean"  # `eri benchmark train` measures it by default
    assert bench_model("toy_mean", "tiny").branches["visual"].encoder.out_dim == 8
    common = dict(encoder="toy_mean", length=20, batch=4, steps=2, loop_videos=4, device="cpu", precision="32-true",
                  threads=1, size="tiny")
    assert _measure(mode="loop", **common)["videos_per_s"] > 0
    # a measurement runs in a fresh process, which imports the file that registers the encoder
    assert _modules(["toy_mean", "lstm"]) == ["toy_encoder"]
    assert run_one(mode="batched", modules=("toy_encoder",), **common)["videos_per_s"] > 0


def test_eri_list_describes_a_new_encoder(toy):
    from eri.commands.components import describe

    lines = describe("encoders", ENCODERS)
    assert "toy_mean" in lines[0].split()
    at = next(i for i, line in enumerate(lines) if line.startswith("  toy_mean "))
    assert "Masked mean over the real steps" in lines[at]
    assert [x.strip() for x in lines[at + 1:at + 5]] == [
        "preset paper: hidden=64", "preset demo: hidden=32", "preset tiny: hidden=8",
        "search: hidden, toy_activation (activation)"]
