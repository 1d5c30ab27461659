import pytest

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
