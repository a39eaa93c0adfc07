"""`stress-lightning export` end to end on a Lightning checkpoint and on an exported ONNX file, and its errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import onnx
import pytest
import torch

from stress_lightning.commands import CommandError
from stress_lightning.commands.export import main
from stress_lightning.export.onnx import FP16_ATOL, FP16_RTOL, example_clips, onnx_session
from stress_lightning.export.tensorrt import tensorrt_available
from stress_lightning.inference.integrity import ChecksumMismatch, sha256_file
from stress_lightning.inference.loading import onnx_spec, resolve_model
from stress_lightning.models.module import MultiTaskStressModule
from stress_lightning.models.net import MultiTaskNet

NET = {
    "spatial_backbone": "conv4",
    "spatial_kwargs": {"channels": [8, 8, 16, 16]},
    "temporal_backbone": "c3d_small",
    "temporal_kwargs": {"channels": [8, 8, 16, 16]},
    "rppg_backbone": "rppg_cnn",
}
GEOMETRY = {"fps": 25.0, "roi_frames": 100, "face_frames": 4, "face_size": 32, "roi_size": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lightning checkpoint of a small random MultiTaskStressModule (written the way `fit` writes it)."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    module = MultiTaskStressModule(net=NET, stress_levels=["calm", "tense"], **GEOMETRY)
    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=folder,
    )
    trainer.strategy.connect(module)
    path = folder / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`export --fp16` of the checkpoint: (output folder, what it printed)."""
    out = tmp_path_factory.mktemp("export") / "out"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["--model", str(checkpoint), "--out", str(out), "--fp16"]) == 0
    return out, buffer.getvalue()


def test_export_writes_checked_onnx_files_with_the_spec(checkpoint: Path, exported: tuple[Path, str]) -> None:
    out, printed = exported
    assert {p.name for p in out.iterdir()} == {
        "model.onnx",
        "expression.onnx",
        "model_fp16.onnx",
        "checksums.json",
        "export_report.json",
    }
    report = json.loads((out / "export_report.json").read_text())
    assert report["status"] == "ok" and report["format"] == "onnx" and report["opset"] == 17
    # Every file written has its SHA-256 in the report and in checksums.json.
    checksums = json.loads((out / "checksums.json").read_text())
    assert checksums["algorithm"] == "sha256" and set(checksums["files"]) == set(report["files"])
    for name, entry in checksums["files"].items():
        assert entry["sha256"] == report["sha256"][name] == sha256_file(out / name)
        assert entry["bytes"] == report["files"][name]
    assert "checksums: " in printed
    assert report["spec"]["roi_frames"] == 100 and report["spec"]["stress_names"] == ["calm", "tense"]
    assert report["files"] == {
        p: (out / p).stat().st_size for p in ("model.onnx", "expression.onnx", "model_fp16.onnx")
    }
    parity = report["parity"]
    assert list(parity["model.onnx"]["max_abs_diff"]) == list(MultiTaskNet.OUTPUT_NAMES)
    assert max(parity["model.onnx"]["max_abs_diff"].values()) <= 1e-3
    assert set(parity["expression.onnx"]["max_abs_diff"]) == {"expression_logits", "expression_probs"}
    fp16 = parity["model_fp16.onnx"]
    assert (fp16["against"], fp16["atol"], fp16["rtol"]) == ("pytorch", FP16_ATOL, FP16_RTOL)
    assert 0 < max(fp16["max_abs_diff"].values()) <= FP16_ATOL + FP16_RTOL * 200

    # Every ONNX file carries the checkpoint's spec, so each alone feeds the stream.
    spec = resolve_model(checkpoint, prefer="torch").spec
    for name in ("model.onnx", "expression.onnx", "model_fp16.onnx"):
        assert onnx_spec(out / name) == spec
    model = onnx.load(str(out / "model.onnx"))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 4, 3, 32, 32]

    assert "model_fp16.onnx against PyTorch" in printed and "hr_bpm" in printed and "MiB" in printed
    hr_row = next(line for line in printed.splitlines() if line.startswith("hr_bpm"))
    assert len(hr_row.split()) == 4  # one column per file: model, expression (none for hr_bpm), fp16
    frames, roi = example_clips(3, 4, 32, 100, 8, 25.0)
    feed = {"frames": frames.numpy(), "roi": roi.numpy()}
    (probs,) = onnx_session(out / "model_fp16.onnx").run(["stress_probs"], feed)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert probs.shape == (3, 2)


def test_onnx_input_converts_fp16_and_names_what_tensorrt_lacks(
    exported: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    available, reason = tensorrt_available()
    if available:
        pytest.skip(f"TensorRT is usable here ({reason}); the missing-TensorRT path is not reachable")
    source, _ = exported
    out = tmp_path / "trt"
    args = ["--model", str(source / "model.onnx"), "--out", str(out), "--fp16", "--format", "tensorrt", "--json"]
    with pytest.raises(CommandError, match=r"TensorRT cannot run here: tensorrt is not installed") as err:
        main(args)
    assert "Written: model.onnx, expression.onnx, model_fp16.onnx" in str(err.value)
    report = json.loads(capsys.readouterr().out)  # --json: stdout is the report alone
    assert report == json.loads((out / "export_report.json").read_text())
    assert report["status"] == "failed" and report["tensorrt"]["status"] == "skipped"
    assert report["tensorrt"]["profiles"]["roi"] == [[1, 100, 3, 8, 8], [1, 100, 3, 8, 8], [8, 100, 3, 8, 8]]
    # Without PyTorch weights the FP16 file is checked against the FP32 ONNX file.
    assert report["parity"]["model_fp16.onnx"]["against"] == "model.onnx"
    assert {p.name for p in out.iterdir()} == {
        "model.onnx",
        "expression.onnx",
        "model_fp16.onnx",
        "checksums.json",
        "export_report.json",
    }
    assert not (out / "model_fp16.engine").exists()
    assert set(json.loads((out / "checksums.json").read_text())["files"]) == set(report["sha256"])


def test_an_exported_file_that_changed_is_not_loaded(exported: tuple[Path, str], tmp_path: Path, bad_input) -> None:
    source, _ = exported
    folder = tmp_path / "deployed"
    shutil.copytree(source, folder)
    assert resolve_model(folder / "model.onnx").onnx_path == folder / "model.onnx"  # intact: loads
    for name in ("model.onnx", "expression.onnx"):
        data = bytearray((source / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / name).write_bytes(bytes(data))
        with pytest.raises(ChecksumMismatch, match=f"{name} does not match its checksum") as err:
            resolve_model(folder / "model.onnx")
        assert str(folder / "checksums.json") in str(err.value)
        bad_input.record(
            "checkpoints", f"exported {name} with one byte flipped, beside its checksums.json", str(err.value)
        )
        shutil.copyfile(source / name, folder / name)


def test_bad_inputs_name_the_path(tmp_path: Path, checkpoint: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(CommandError, match=re.escape(f"{missing}: no such file")):
        main(["--model", str(missing), "--out", str(tmp_path / "a")])
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CommandError, match=re.escape(f"{junk}: ")):  # the loader's words for why vary
        main(["--model", str(junk), "--out", str(tmp_path / "b")])
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("not onnx")
    with pytest.raises(CommandError, match=re.escape(f"{fake_onnx}: not a readable ONNX file")):
        main(["--model", str(fake_onnx), "--out", str(tmp_path / "c"), "--fp16"])
    # An ONNX file has nothing left to export in plain ONNX; bad numbers are usage errors.
    for argv in (
        ["--model", str(fake_onnx)],
        ["--model", str(checkpoint), "--atol", "0"],
        ["--model", str(checkpoint), "--max-batch", "0"],
        ["--model", str(checkpoint), "--format", "coreml"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
