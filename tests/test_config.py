import pytest

from conftest import ROOT

from eri.config import ConfigError, load_config
from tools.train import main as train_main


def test_yaml_unknown_key_lists_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  bach_size: 3\n")
    with pytest.raises(ConfigError, match=r"bach_size.*valid keys here: \['root', 'layout'"):
        load_config(bad)


def test_override_unknown_key_and_type_errors():
    with pytest.raises(ConfigError, match="trainer.max_epoch"):
        load_config("configs/demo.yaml", ["trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match="max_epochs"):
        load_config("configs/demo.yaml", ["trainer.max_epochs=three"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/demo.yaml", ["trainer.max_epochs"])


def test_overrides_reach_nested_lists_and_out_defaults_to_config_name():
    cfg = load_config("configs/demo.yaml", ["model.branches.0.encoder.hidden=32", "loss={pcc: 1.0}"])
    assert cfg.model.branches[0].encoder.hidden == 32 and cfg.model.branches[1].encoder.hidden == 64
    assert dict(cfg.loss) == {"pcc": 1.0}
    assert cfg.out == "runs/demo"


def test_cli_reports_config_errors_with_exit_code_2(capsys):
    assert train_main(["--config", "configs/demo.yaml", "optim.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and "'lr'" in err


def test_training_flushes_denormals_unless_told_not_to():
    """RNN gradients decay into denormal floats, which the CPU computes on very slowly; training flushes them."""
    import torch

    from eri.training.run import configure_cpu

    torch.set_flush_denormal(False)  # earlier trainings in this process flushed; make the denormal first
    tiny = torch.tensor([1e-40])  # a float32 denormal
    assert tiny.item() > 0.0
    try:
        configure_cpu(load_config("configs/demo.yaml", []))
        assert (tiny * 1.0).item() == 0.0
        configure_cpu(load_config("configs/demo.yaml", ["trainer.flush_denormal=false"]))
        assert (tiny * 1.0).item() > 0.0
    finally:
        torch.set_flush_denormal(False)


# ----------------------------------------------------------------------------- composition (base:, dotted keys)
def test_a_file_builds_on_its_bases_left_to_right_then_its_own_keys(tmp_path, monkeypatch):
    """Bases load first (recursively, left to right; a shared one once), the file's keys merge on top, dotted
    keys set one value (list items by index) and replace a mapping whole; a relative base is found beside
    the file, else from the working directory; `out` follows the named file."""
    from omegaconf import OmegaConf

    monkeypatch.chdir(ROOT)
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "optim.yaml").write_text("base: sub/common.yaml\noptim: {lr: 0.5}\n")
    (sub / "common.yaml").write_text("optim: {lr: 0.1, weight_decay: 0.2}\nseed: 7\n")
    (sub / "run.yaml").write_text("base: [configs/demo.yaml, ../optim.yaml, common.yaml]\n"
                                  "seed: 3\nmodel.branches.1.encoder.hidden: 8\nmodel.fusion: {name: gated}\n")
    cfg = load_config(sub / "run.yaml")
    demo = load_config("configs/demo.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.seed) == (0.5, 0.2, 3)  # common.yaml applied once, first
    assert cfg.model.branches[1].encoder.hidden == 8 and cfg.model.branches[0].encoder == demo.model.branches[0].encoder
    assert OmegaConf.to_container(cfg.model.fusion) == {"name": "gated"}  # a path replaces the mapping
    assert cfg.out == "runs/run" and cfg.data == demo.data


def test_hkust_authors_is_the_paper_config_with_pre_norm():
    from omegaconf import OmegaConf

    authors, paper = (OmegaConf.to_container(load_config(f"configs/{n}.yaml")) for n in ("hkust_authors", "hkust_gru_transformer"))
    assert [b["encoder"].pop("norm") for b in authors["model"]["branches"]] == ["pre", "pre"]
    assert [b["encoder"].pop("norm") for b in paper["model"]["branches"]] == ["post", "post"]
    assert authors.pop("out") == "runs/hkust_authors" and paper.pop("out") == "runs/hkust_gru_transformer"
    assert authors == paper


@pytest.mark.parametrize("files, error", [
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, r"b.yaml: base cycle .*a.yaml -> .*b.yaml -> .*a.yaml$"),
    ({"a.yaml": "base: nowhere.yaml\nseed: 1\n"}, r"a.yaml: base nowhere.yaml not found"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "n_trials: 3\nspace: {}\n"},
     r"a.yaml: base .*b.yaml is not a training config \(its keys \['n_trials', 'space'\] are not training keys\)"),
    ({"a.yaml": "base: {x: 1}\n"}, r"a.yaml: base must be a file or a list of files"),
    ({"a.yaml": "base: b.yaml\n", "b.yaml": "model.branches.5.encoder.hidden: 3\n"}, r"b.yaml: 'model.branches.5"),
])
def test_composition_errors_are_one_line_naming_the_file(tmp_path, files, error):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=error) as e:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(e.value)


def test_mma_and_ensemble_configs_compose_the_same_way(tmp_path, monkeypatch):
    from eri.ensembles.config import load_ensemble_config
    from eri.mma.config import load_mma_config

    monkeypatch.chdir(ROOT)
    (tmp_path / "mma.yaml").write_text("base: configs/mma/demo.yaml\ndata.batch_size: 8\nmodel.crop_size: 32\n")
    mma, demo = load_mma_config(tmp_path / "mma.yaml"), load_mma_config("configs/mma/demo.yaml")
    assert (mma.data.batch_size, mma.model.crop_size, mma.data.datasets) == (8, 32, demo.data.datasets)
    with pytest.raises(ConfigError, match="is not a mma config"):
        (tmp_path / "bad.yaml").write_text("base: configs/demo.yaml\n")
        load_mma_config(tmp_path / "bad.yaml")
    (tmp_path / "train.yaml").write_text("base: configs/demo.yaml\nseed: 5\n")
    (tmp_path / "ens.yaml").write_text("base: configs/ensemble/demo_seeds.yaml\ncombiner: weights\n"
                                       "members: [{name: near, config: train.yaml}, {name: far, config: configs/demo.yaml}]\n")
    ens = load_ensemble_config(tmp_path / "ens.yaml")
    assert ens.combiner == "weights" and [m.config for m in ens.members] == [str(tmp_path / "train.yaml"), "configs/demo.yaml"]
    assert load_config(ens.members[0].config).seed == 5
