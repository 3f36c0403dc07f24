"""ONNX, TorchScript and timm exports: checked against the torch model before they are written,
self-describing (labels, preprocessing, the check's figures), and refused when they disagree."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from tl_core.errors import TLError
from tl_core.runner import JobSpec, run_job
from tl_core.runs import Run, RunStore


@pytest.fixture
def trained(studio_home: Path, color_folders: Path) -> Run:
    cfg = tiny_config(color_folders, strategy="fine-tune-all", epochs=2).resolved()
    run = RunStore().create(cfg.to_dict())
    events: list[dict] = []
    run_job(JobSpec("job", cfg.to_dict(), str(run.dir), "cpu"), events.append, threading.Event())
    assert events[-1]["fields"]["status"] == "completed"
    return run


def _images(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n validation images, preprocessed as for prediction, and the torch model's logits."""
    from tl_core.images import load_rgb
    from tl_core.inference import load_run_model
    from tl_core.preprocessing import eval_transform

    loaded = load_run_model(run)
    tf = eval_transform(loaded.data_config)
    x = torch.stack([tf(load_rgb(p)) for p, _ in run.read_json("split.json")["val"][:n]])
    with torch.no_grad():
        return x, loaded.model(x)


def test_onnx_matches_the_model_at_any_batch_size_and_explains_itself(trained: Run, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from tl_core.model_export import export_run

    result = export_run(trained, "onnx", tmp_path / "m.onnx")
    assert result.parity.images == len(trained.read_json("split.json")["val"]) == 6  # every val image
    assert result.parity.top1_agreement == 1.0 and result.parity.max_abs_logit_diff < 1e-3
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    for n in (1, 5):  # the batch dimension is dynamic
        x, expected = _images(trained, n)
        got = session.run(None, {"image": x.numpy()})[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-3)
    meta = {p.key: p.value for p in onnx.load(result.path).metadata_props}
    assert json.loads(meta["labels.json"]) == trained.read_json("labels.json")
    assert (
        json.loads(meta["preprocessing.json"])["input_size"]
        == trained.read_json("data_config.json")["input_size"]
    )
    assert json.loads(meta["parity.json"])["top1_agreement"] == 1.0


def test_torchscript_matches_the_model_and_carries_its_labels(trained: Run, tmp_path: Path) -> None:
    from tl_core.model_export import export_run

    result = export_run(trained, "torchscript", tmp_path / "m.pt")
    extra = {"labels.json": "", "preprocessing.json": "", "parity.json": ""}
    module = torch.jit.load(result.path, _extra_files=extra)
    x, expected = _images(trained, 4)
    torch.testing.assert_close(module(x), expected, atol=1e-3, rtol=0)
    assert json.loads(extra["labels.json"]) == trained.read_json("labels.json")
    assert json.loads(extra["parity.json"])["images"] == result.parity.images


def test_an_export_that_disagrees_is_refused_and_nothing_is_written(
    trained: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tl_core.model_export as me

    monkeypatch.setattr(me, "MAX_LOGIT_DIFF", -1.0)  # any difference at all now counts as wrong
    out = tmp_path / "exports" / "m.pt"
    with pytest.raises(TLError, match="disagrees with the model"):
        me.export_run(trained, "torchscript", out)
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no file, no half file


def test_the_cli_exports_and_says_how_it_was_checked(trained: Run, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    cmd = [sys.executable, "-m", "tl_core.cli", "export", str(trained.dir), "--format", "onnx"]
    proc = subprocess.run([*cmd, "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["format"] == "onnx" and summary["path"] == str(out) and out.is_file()
    assert summary["parity"]["top1_agreement"] == 1.0
    empty = RunStore().create(tiny_config(tmp_path).to_dict())
    proc = subprocess.run([*cmd[:4], str(empty.dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "has no trained weights to export yet" in proc.stderr


def _export_page(run: Run, monkeypatch: pytest.MonkeyPatch):
    """The app's Export page for ``run``, as a browser opening ``?run=`` would see it."""
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv("TL_STUDIO_WORKSHOP", raising=False)
    at = AppTest.from_file(str(root / "app.py"), default_timeout=180)
    at.query_params["run"] = run.id
    at.run()
    at.switch_page("pages/export.py")
    return at.run()


def test_the_export_page_builds_on_click_and_then_offers_the_file(
    trained: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _export_page(trained, monkeypatch)
    assert [b.label for b in at.button if b.label.startswith("Build")] == [
        "Build ONNX",
        "Build TorchScript",
        "Build timm",
    ]
    assert not (trained.dir / "exports").exists()  # nothing built on page load
    next(b for b in at.button if b.label == "Build TorchScript").click().run()
    assert not at.exception and not at.error
    assert "Download TorchScript" in [b.label for b in at.get("download_button")]
    assert any(c.value.startswith("Checked on 6 validation images: top-1 agreement 100%") for c in at.caption)
    assert (trained.dir / "exports" / "model.torchscript.pt").is_file()
    at.run()  # the next visit finds it built: no button, the download
    assert [b.label for b in at.button if b.label.startswith("Build")] == ["Build ONNX", "Build timm"]


def test_predict_gives_the_same_answer_from_every_kind_of_target(trained: Run, tmp_path: Path) -> None:
    from tl_core.model_export import export_run

    targets = {
        "run": str(trained.dir),
        "bundle": export_run(trained, "bundle", tmp_path / "m.zip").path,
        "onnx": export_run(trained, "onnx", tmp_path / "m.onnx").path,
        "torchscript": export_run(trained, "torchscript", tmp_path / "m.pt").path,
        "timm": export_run(trained, "timm", tmp_path / "m-timm").path,
    }
    with zipfile.ZipFile(targets["bundle"]) as zf:
        zf.extractall(tmp_path / "unzipped")
    targets["unzipped bundle"] = str(tmp_path / "unzipped")
    images = [p for p, _ in trained.read_json("split.json")["val"][:3]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    answers = {}
    for kind, target in targets.items():
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tl_core.cli",
                "predict",
                target,
                *images,
                str(broken),
                "--json",
                "--top-k",
                "3",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        assert [r["image"] for r in rows] == [*images, str(broken)]
        assert "error" in rows[-1] and "broken.jpg" in proc.stderr  # reported; the others still predicted
        answers[kind] = rows[:-1]
    reference = answers["run"]
    for kind, rows in answers.items():
        for got, want in zip(rows, reference, strict=True):
            assert got["top_k"][0]["label"] == want["top_k"][0]["label"], kind
            probs = {t["label"]: t["prob"] for t in got["top_k"]}
            for t in want["top_k"]:
                assert abs(probs[t["label"]] - t["prob"]) < 1e-3, kind


def test_every_export_carries_the_model_card_preprocessing_and_settings(trained: Run, tmp_path: Path) -> None:
    import onnx
    import torch

    from tl_core.model_card import model_card
    from tl_core.model_export import export_run

    card = model_card(trained)
    config = trained.read_json("config.json")
    onnx_meta = {
        p.key: p.value
        for p in onnx.load(export_run(trained, "onnx", tmp_path / "m.onnx").path).metadata_props
    }
    extra = {"MODEL_CARD.md": "", "preprocessing.json": "", "config.json": ""}
    torch.jit.load(export_run(trained, "torchscript", tmp_path / "m.pt").path, _extra_files=extra)
    timm_dir = Path(export_run(trained, "timm", tmp_path / "m-timm").path)
    with zipfile.ZipFile(export_run(trained, "bundle", tmp_path / "m.zip").path) as zf:
        bundle = {
            name: zf.read(name).decode() for name in ("MODEL_CARD.md", "preprocessing.json", "config.json")
        }
    extra = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}
    for files in (onnx_meta, extra, bundle):
        assert files["MODEL_CARD.md"] == card
        assert json.loads(files["preprocessing.json"]) == trained.read_json("data_config.json")
        assert json.loads(files["config.json"]) == config
    assert (timm_dir / "MODEL_CARD.md").read_text().replace("train_config.json", "config.json") == card
    assert json.loads((timm_dir / "train_config.json").read_text()) == config
    assert json.loads((timm_dir / "preprocessing.json").read_text()) == trained.read_json("data_config.json")


def test_timm_export_loads_with_local_dir_and_predicts_the_same_top1(trained: Run, tmp_path: Path) -> None:
    import timm
    from timm.data import resolve_data_config

    from tl_core.model_export import export_run

    result = export_run(trained, "timm", tmp_path / "m-timm")
    folder = Path(result.path)
    assert result.format == "timm" and folder.is_dir() and result.parity.top1_agreement == 1.0
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    labels = trained.read_json("labels.json")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == trained.read_json("config.json")["backbone"]
    assert config["label_names"] == labels and config["num_classes"] == len(labels)
    assert model.pretrained_cfg["label_names"] == labels
    data_config = trained.read_json("data_config.json")
    resolved = resolve_data_config({}, model=model)  # timm's own tools see the run's preprocessing
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode"):
        want = data_config[key]
        assert (list(resolved[key]) if isinstance(want, list) else resolved[key]) == want, key
    assert json.loads((folder / "preprocessing.json").read_text()) == data_config
    assert json.loads((folder / "parity.json").read_text())["images"] == result.parity.images
    x, expected = _images(trained, 6)
    with torch.no_grad():
        got = model(x)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_timm_export_replaces_an_earlier_one_but_never_other_folders(trained: Run, tmp_path: Path) -> None:
    from tl_core.model_export import export_run

    out = tmp_path / "exports" / "m-timm"
    export_run(trained, "timm", out)
    (out / "config.json").write_text("{}")  # an earlier, different export
    export_run(trained, "timm", out)
    assert json.loads((out / "config.json").read_text())["label_names"] == trained.read_json("labels.json")
    assert [p.name for p in out.parent.iterdir()] == ["m-timm"]  # no temporary folders left behind
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TLError, match="holds files that are not from an export"):
        export_run(trained, "timm", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_timm_export_that_disagrees_is_refused_and_nothing_is_written(
    trained: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tl_core.model_export as me

    out = tmp_path / "exports" / "m-timm"
    monkeypatch.setattr(me, "MAX_LOGIT_DIFF", -1.0)
    with pytest.raises(TLError, match="timm export disagrees with the model"):
        me.export_run(trained, "timm", out)
    assert not list(out.parent.iterdir())  # no folder, no half folder


def test_the_timm_download_unzips_to_a_folder_timm_loads(trained: Run, tmp_path: Path) -> None:
    import zipfile

    import timm

    from tl_core.model_export import download_bytes, download_name, export_in_run, saved_export

    result = export_in_run(trained, "timm")
    assert saved_export(trained, "timm") == result  # built once, then found
    name = download_name(trained, "timm")
    assert name == f"{trained.id}-timm.zip"
    archive = tmp_path / name
    archive.write_bytes(download_bytes(result, name))
    with zipfile.ZipFile(archive) as zf:
        assert {"config.json", "model.safetensors", "preprocessing.json"} <= {
            Path(n).name for n in zf.namelist()
        }
        zf.extractall(tmp_path / "unzipped")
    model = timm.create_model(f"local-dir:{tmp_path / 'unzipped' / f'{trained.id}-timm'}", pretrained=True)
    x, expected = _images(trained, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), expected, atol=1e-4, rtol=0)


def test_the_cli_exports_a_timm_folder(trained: Run, tmp_path: Path) -> None:
    out = tmp_path / "model-timm"
    cmd = [sys.executable, "-m", "tl_core.cli", "export", str(trained.dir), "--format", "timm"]
    cmd += ["--out", str(out)]
    proc = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["format"] == "timm" and summary["path"] == str(out)
    assert (out / "model.safetensors").is_file()
    assert summary["parity"]["top1_agreement"] == 1.0
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # again: replaces it
    assert proc.returncode == 0, proc.stderr
    assert f"timm.create_model('local-dir:{out}', pretrained=True)" in proc.stdout


def test_the_export_page_builds_the_timm_folder_and_offers_it_zipped(
    trained: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _export_page(trained, monkeypatch)
    next(b for b in at.button if b.label == "Build timm").click().run()
    assert not at.exception and not at.error
    assert "Download timm (.zip)" in [b.label for b in at.get("download_button")]
    assert (trained.dir / "exports" / "model-timm" / "config.json").is_file()
