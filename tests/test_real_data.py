"""Real data is the default and synthetic data is opt-in: no shipped config, ensemble or search writes
into a folder holding a user's own data, generators write only into new or empty folders (and resume
their own), every extraction config has the training config that reads exactly its streams, and a
model that cannot read new videos says which config trains one before doing any work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides

from eri.config import load_config, streams_of
from eri.constants import EMOTIONS
from eri.data.synthetic import ensure_synthetic, generate
from eri.data.synthetic.claim import MARKER
from eri.ensembles.config import load_ensemble_config
from eri.errors import EXIT_INPUT, ConfigError, InputError
from eri.features.config import load_extract_config
from eri.features.streams import build_streams
from eri.mma.synthetic import ensure_mma_synthetic
from eri.search.study import load_search_config
from tools.make_synthetic import main as make_synthetic_main
from tools.predict import main as predict_main
from tools.train import main as train_main
from tools.train_mma import main as train_mma_main

# each shipped extraction config -> the training config(s) reading exactly the streams it writes
# (the README's table "extraction config -> training config" says the same)
EXTRACT_TO_TRAIN = {
    "configs/extract/offline.yaml": ["configs/offline.yaml"],
    "configs/extract/fast.yaml": ["configs/offline.yaml"],
    "configs/extract/paper004.yaml": ["configs/hkust_gru_transformer.yaml", "configs/hkust_authors.yaml"],
    "configs/extract/mma.yaml": ["configs/mma_mrnnet.yaml"],
    "configs/extract/muse2022.yaml": ["configs/muse2022.yaml"],
    "configs/extract/crops.yaml": ["configs/mma_mrnnet_e2e.yaml"],
}
SYNTHETIC_DEMOS = ["configs/demo.yaml"]  # the only training config that generates data (make demo)


def _training_cases() -> list[tuple[str, list[str]]]:
    """(config, overrides) of every shipped training config and of every ensemble member and search base."""
    cases = [(str(c), []) for c in sorted(Path("configs").glob("*.yaml"))]
    for path in sorted(Path("configs/ensemble").glob("*.yaml")):
        ecfg = load_ensemble_config(path)
        cases += [(m["config"], [*m.get("overrides", []), *ecfg.overrides]) for m in ecfg.members if m.get("config")]
    for path in sorted(Path("configs/search").glob("*.yaml")):
        scfg = load_search_config(path)
        cases.append((scfg.base, list(scfg.base_overrides)))
    unique = {(c, tuple(o)): None for c, o in cases}
    return [(c, list(o)) for c, o in unique]


CASES = _training_cases()


def _user_folder(root: Path) -> Path:
    """A folder holding only a user's own labels, in the ABAW5 layout."""
    root.mkdir(parents=True)
    rows = [{"File_ID": f"[{i:05d}]", "Split": s, **{e: 0.5 for e in EMOTIONS}, "Age": 30, "Country": "United States"}
            for i, s in enumerate(["Train", "Train", "Val", "Test"], 1)]
    pd.DataFrame(rows).to_csv(root / "data_info.csv", index=False)
    return root


def _fingerprint(root: Path) -> dict[str, str]:
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------ a user's folder stays theirs
@pytest.mark.parametrize("config,overrides", CASES, ids=[f"{Path(c).stem}{'+' if o else ''}{i}"
                                                         for i, (c, o) in enumerate(CASES)])
def test_a_users_folder_is_never_written_by_training(config, overrides, tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before = _fingerprint(user)
    run = tmp_path / "run"
    assert train_main(["--config", config, "--out", str(run), *overrides, f"data.root={user}"]) == EXIT_INPUT
    line = _error_line(capsys)
    assert str(user) in line and "delete" not in line.lower()
    synthetic = load_config(config, overrides).data.synthetic
    if not overrides:  # only the demo asks for generated data; everything else opts in with overrides
        assert bool(synthetic) == (config in SYNTHETIC_DEMOS), config
    if synthetic:  # pointed at the user's folder: refused, saying how to train on the data there
        assert "data.synthetic=null" in line
    # the same with synthetic data forced onto that folder: refused, and the message says what to do
    assert train_main(["--config", config, "--out", str(run), *overrides, f"data.root={user}",
                       "data.synthetic=hume-small"]) == EXIT_INPUT
    line = _error_line(capsys)
    assert "did not generate" in line and "data.synthetic=null" in line and "delete" not in line.lower()
    assert _fingerprint(user) == before and not run.exists()


def test_the_demo_on_a_folder_of_extracted_features_leaves_it_alone(random_root, tmp_path, capsys):
    import shutil

    mine = tmp_path / "mine"
    shutil.copytree(random_root, mine)  # labels + a feature store, as extraction writes them
    before = _fingerprint(mine)
    run = tmp_path / "run"
    assert train_main(["--config", "configs/demo.yaml", "--out", str(run), f"data.root={mine}"]) == EXIT_INPUT
    line = _error_line(capsys)
    assert "did not generate" in line and "data.synthetic=null" in line and "delete" not in line.lower()
    assert _fingerprint(mine) == before


def test_paper_configs_read_real_data_by_default():
    for train_configs in EXTRACT_TO_TRAIN.values():
        for path in train_configs:
            cfg = load_config(path)
            assert cfg.data.synthetic is None and "hume-small" not in cfg.data.root, path
            text = Path(path).read_text()
            assert "data.root=" in text, f"{path}: its header says how to point it at your data"
            if path == "configs/mma_mrnnet_e2e.yaml":  # pixels: the synthetic face videos
                assert "data.root=data/tiny-faces data.synthetic=tiny-faces" in text, path
            elif path != "configs/muse2022.yaml" and path != "configs/offline.yaml":
                assert "data.root=data/hume-small data.synthetic=hume-small" in text, path
    assert load_config("configs/demo.yaml").data.synthetic == "hume-small"
    assert "tools/train.py --config configs/demo.yaml" in Path("Makefile").read_text()


def test_make_synthetic_and_mma_refuse_a_users_folder(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before = _fingerprint(user)
    assert make_synthetic_main(["--out", str(user), "--preset", "tiny", "--no-progress"]) == EXIT_INPUT
    line = _error_line(capsys)
    assert "did not generate" in line and "--out" in line and "delete" not in line.lower()
    assert train_mma_main(["--config", "configs/mma/demo.yaml", "--out", str(tmp_path / "run"),
                           f"data.synthetic_root={user}"]) == EXIT_INPUT
    line = _error_line(capsys)
    assert "did not generate" in line and "data.synthetic_root" in line and "delete" not in line.lower()
    with pytest.raises(ConfigError, match="did not generate"):
        ensure_mma_synthetic(user, "tiny")
    assert _fingerprint(user) == before and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ generation: new, empty, resumed
def test_generation_into_an_empty_folder_resumes_byte_identical(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    generate(root, "tiny", seed=0, progress=False)
    marker = json.loads((root / MARKER).read_text())
    assert marker["preset"] == "tiny" and marker["seed"] == 0
    done = {p: (root / p).read_bytes() for p in _fingerprint(root)}
    (root / "synthetic.json").unlink()  # an interrupted run: no synthetic.json, a video missing
    (root / "features" / "au" / "00005.npz").unlink()
    summary = generate(root, "tiny", seed=0, progress=False)
    assert summary["_generated_now"] == 1
    assert {p: (root / p).read_bytes() for p in _fingerprint(root)} == done
    assert ensure_synthetic(root, "tiny", seed=0) == root
    with pytest.raises(ConfigError) as e:  # its own folder, other data: refused, never "delete"
        generate(root, "tiny", seed=1, progress=False)
    assert "another" in str(e.value) and "delete" not in str(e.value).lower()


def test_a_complete_dataset_of_older_versions_is_still_accepted(tmp_path, tiny_root):
    """Folders generated before markers existed hold a complete synthetic.json: reused, not refused."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_root, old)
    (old / MARKER).unlink()
    assert ensure_synthetic(old, "tiny", seed=0) == old
    assert generate(old, "tiny", seed=0, progress=False)["_generated_now"] == 0


def test_mma_generation_into_an_empty_folder_and_resume(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    ensure_mma_synthetic(root, "tiny", seed=0)
    done = _fingerprint(root)
    (root / "synthetic.json").unlink()  # interrupted before its last file: redone in its own folder
    ensure_mma_synthetic(root, "tiny", seed=0)
    assert _fingerprint(root) == done
    with pytest.raises(ConfigError, match="another"):
        ensure_mma_synthetic(root, "tiny", seed=1)


# ------------------------------------------------------------------------------ extraction -> training streams
def test_every_extraction_config_has_the_training_config_of_its_streams():
    assert sorted(EXTRACT_TO_TRAIN) == sorted(str(p) for p in Path("configs/extract").glob("*.yaml"))
    trained = {c for cs in EXTRACT_TO_TRAIN.values() for c in cs}
    assert trained | set(SYNTHETIC_DEMOS) == {str(p) for p in Path("configs").glob("*.yaml")}
    for extract, train_configs in EXTRACT_TO_TRAIN.items():
        written = {s.name for s in build_streams(load_extract_config(extract), load=False)}
        for train in train_configs:
            assert set(streams_of(load_config(train))) == written, (extract, train)
            assert train in Path(extract).read_text(), f"{extract} names its training config"


# ------------------------------------------------------------------------------ predict needs extracted features
def test_predict_with_a_synthetic_model_says_which_config_to_train(tmp_path, tiny_root, capsys):
    from eri.inference import load_model
    from eri.training.run import train

    run = tmp_path / "run"
    train(load_config("configs/demo.yaml", tiny_overrides(tiny_root, run, "trainer.max_epochs=1", "model.preset=tiny",
                                                          "data.batch_size=8")))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded")
    out = tmp_path / "pred"
    argv = ["--checkpoint", str(run / "model.ckpt"), "--video", str(video), "--out", str(out)]
    assert predict_main(argv) == EXIT_INPUT
    line = _error_line(capsys)
    assert "synthetic" in line and "configs/offline.yaml" in line and "configs/extract/offline.yaml" in line
    assert not out.exists()
    predictor = load_model(run / "model.ckpt")  # the model still predicts stored features
    assert len(predictor.predict_features(tiny_root)) == len(pd.read_csv(tiny_root / "data_info.csv"))
    with pytest.raises(InputError, match="configs/offline.yaml"):
        predictor.predict([video], out)
    assert not out.exists()
