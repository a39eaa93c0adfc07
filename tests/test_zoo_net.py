"""The network's zoo options: stream and stress-input ablations, the body stream's late fusion, auxiliary logits,
and the module's uncertainty weighting and PPG waveform loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from zoo_helpers import assert_loss_falls, assert_onnx_parity, fixed_batch, tiny_net

from stress_lightning.models.module import DEFAULT_LOSS_WEIGHTS, MultiTaskStressModule
from stress_lightning.models.net import PHYSIOLOGY_OUTPUTS, MultiTaskNet
from stress_lightning.models.outputs import outputs_table


@pytest.mark.parametrize(
    ("streams", "stress_inputs"),
    [
        (["spatial"], ["expression"]),
        (["temporal"], ["expression", "context"]),
        (["spatial", "temporal"], None),
        (["spatial", "temporal", "rppg"], ["expression", "rppg_features", "context"]),
    ],
)
def test_ablations_train_and_export(streams: list[str], stress_inputs: list[str] | None, tmp_path: Path) -> None:
    net = tiny_net(streams=streams, stress_inputs=stress_inputs)
    batch = fixed_batch()
    has_rppg = "rppg" in streams
    assert (net.rppg is not None) == has_rppg
    assert (net.spatial is not None) == ("spatial" in streams)
    assert (net.temporal is not None) == ("temporal" in streams)
    out = net(batch["frames"], batch["roi"])
    assert set(PHYSIOLOGY_OUTPUTS) <= set(out) if has_rppg else not set(PHYSIOLOGY_OUTPUTS) & set(out)
    assert net.OUTPUT_NAMES == tuple(n for n in MultiTaskNet.OUTPUT_NAMES if n in out)
    if has_rppg:
        assert_loss_falls(net, batch)
    assert set(assert_onnx_parity(net, batch, tmp_path)) == set(net.OUTPUT_NAMES)
    # The config rebuilds the same ablation.
    assert MultiTaskNet.from_config(net.config).OUTPUT_NAMES == net.OUTPUT_NAMES


def test_stress_head_without_hrv_ignores_the_physiology() -> None:
    net = tiny_net(stress_inputs=["expression"]).eval()
    assert not net.stress_head.use_physiology
    probs, ones, zeros = torch.full((2, 7), 1 / 7), torch.ones(2), torch.zeros(2, 1)
    with torch.no_grad():
        a = net.stress_head(probs, torch.tensor([60.0, 60.0]), torch.tensor([20.0] * 2), ones, zeros)
        b = net.stress_head(probs, torch.tensor([120.0, 90.0]), torch.tensor([80.0] * 2), ones, zeros)
    torch.testing.assert_close(a, b)


def test_bad_ablation_names_are_refused() -> None:
    with pytest.raises(ValueError, match="streams must be distinct names"):
        tiny_net(streams=["spatial", "audio"])
    with pytest.raises(ValueError, match="neither 'spatial' nor 'temporal'"):
        tiny_net(streams=["rppg"])
    with pytest.raises(ValueError, match="stress_inputs"):
        tiny_net(stress_inputs=["hr"])
    with pytest.raises(ValueError, match="body_fusion"):
        tiny_net(body_backbone="accm", body_fusion="vote")


@pytest.mark.parametrize("fusion", ["avg", "max"])
def test_body_fusion_is_late_and_only_where_keypoints_exist(fusion: str) -> None:
    net = tiny_net(body_backbone="accm", body_fusion=fusion).eval()
    batch = fixed_batch(with_body=True)
    mask = torch.tensor([True, False, True, False])
    with torch.no_grad():
        fused = net(batch["frames"], batch["roi"], body=batch["body"], body_mask=mask)
        face_only = net(batch["frames"], batch["roi"])
    face_probs = torch.softmax(fused["aux/face"], dim=1)
    body_probs = torch.softmax(fused["aux/body"], dim=1)
    if fusion == "avg":
        expected = (face_probs + body_probs) / 2
    else:
        expected = torch.maximum(face_probs, body_probs)
        expected = expected / expected.sum(dim=1, keepdim=True)
    torch.testing.assert_close(fused["expression_probs"][mask], expected[mask])
    # Without keypoints the face decides, exactly as in the exported graph.
    torch.testing.assert_close(fused["expression_probs"][~mask], face_only["expression_probs"][~mask])
    torch.testing.assert_close(face_only["expression_logits"], fused["aux/face"])
    assert set(net.aux_loss_weights()) == {"aux/face", "aux/body"}


def test_body_stream_trains_and_the_face_graph_exports(tmp_path: Path) -> None:
    net = tiny_net(body_backbone="accm")
    batch = fixed_batch(with_body=True)
    assert_loss_falls(net, batch)
    assert_onnx_parity(net, batch, tmp_path)


def _module(**kwargs) -> MultiTaskStressModule:
    torch.manual_seed(0)
    net = {"spatial_backbone": "conv4", "temporal_backbone": "c3d_small", "dropout": 0.0, **kwargs.pop("net", {})}
    return MultiTaskStressModule(net=net, roi_frames=64, face_size=32, **kwargs)


def _labelled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(batch["frames"])
    batch = dict(batch)
    batch.update(
        rmssd_ms=torch.full((n,), 40.0),
        lf_hf_ratio=torch.full((n,), 1.5),
        hrv_mask=torch.ones(n, dtype=torch.bool),
    )
    return batch


def test_module_adds_ppg_and_auxiliary_losses() -> None:
    module = _module(net={"body_backbone": "accm"})
    batch = _labelled(fixed_batch(with_body=True))
    out = module._run(batch)
    losses = module._sample_losses(out, batch)
    assert "ppg" in losses
    pooled = module._pooled_losses([losses])
    assert pooled["total"].item() == pytest.approx(
        sum(module.loss_weights[k] * pooled[k].item() for k in DEFAULT_LOSS_WEIGHTS)
    )
    # No keypoint anywhere: the body classifier's auxiliary loss drops out of the expression loss.
    no_body = dict(batch, body_mask=torch.zeros(4, dtype=torch.bool))
    with_aux = module._sample_losses(out, batch)["expression"][0]
    without = module._sample_losses(out, no_body)["expression"][0]
    assert (with_aux > without).all()
    # A sample without a reference pulse is masked out of the waveform loss.
    no_ppg = dict(batch, ppg_mask=torch.tensor([True, False, False, False]))
    assert module._sample_losses(out, no_ppg)["ppg"][1].tolist() == [True, False, False, False]


def test_uncertainty_weighting_learns_task_weights() -> None:
    module = _module(loss_weighting="uncertainty", loss_weights={"hrv": 0.0})
    assert set(module.log_variances) == {"expression", "hr", "stress", "ppg"}
    batch = _labelled(fixed_batch())
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(15):
        optimizer.zero_grad()
        parts = [module._sample_losses(module._run(batch), batch)]
        module._pooled_losses(parts)["total"].backward()
        optimizer.step()
    # The weights left 1 (their initial value) and differ between tasks of different scales.
    weights = {k: float(torch.exp(-v.detach())) for k, v in module.log_variances.items()}
    assert all(abs(w - 1.0) > 0.05 for w in weights.values()), weights
    # A task none of the step's samples carries adds nothing: its log-variance stays in the graph (DDP reduces the
    # same parameters on every rank) with a zero gradient.
    optimizer.zero_grad()
    empty = dict(batch, stress_mask=torch.zeros(4, dtype=torch.bool))
    module._pooled_losses([module._sample_losses(module._run(empty), empty)])["total"].backward()
    assert module.log_variances["stress"].grad is not None and module.log_variances["stress"].grad.item() == 0.0
    assert module.log_variances["expression"].grad.abs().item() > 0
    with pytest.raises(ValueError, match="loss_weighting"):
        _module(loss_weighting="learned")


def test_outputs_table_without_physiology_says_nan() -> None:
    outputs = {"expression_probs": np.full((2, 7), 1 / 7), "stress_probs": np.full((2, 3), 1 / 3)}
    table = outputs_table(outputs, list("abcdefg"), list("lnh"))
    assert table["hr_bpm"].isna().all() and len(table) == 2


def test_tukey_taper_reads_the_heart_rate_and_is_configurable() -> None:
    from stress_lightning.models.backbones.rppg import SpectralHeartRate

    t_s = torch.arange(200) / 25.0
    pulse = torch.sin(2 * torch.pi * (72.0 / 60.0) * t_s)[None]
    for taper in ("hann", "tukey"):
        hr, spectrum = SpectralHeartRate(25.0, 200, taper=taper, temperature=0.05)(pulse)
        assert abs(hr.item() - 72.0) < 0.5 and spectrum.sum().item() == pytest.approx(1.0)
    # The flat window weighs every second of the clip: its basis keeps full weight from 1 s to 7 s.
    tukey = SpectralHeartRate(25.0, 200, taper="tukey", taper_alpha=0.25)
    assert tukey.cos_basis[25:175, 0].abs().max() > 0.99
    net = tiny_net(hr_taper="tukey")
    expected = SpectralHeartRate(25.0, 64, taper="tukey", temperature=0.05).cos_basis
    torch.testing.assert_close(net.heart_rate.cos_basis, expected)
    assert MultiTaskNet.from_config(net.config).config["hr_taper"] == "tukey"
    with pytest.raises(ValueError, match="taper must be one of"):
        SpectralHeartRate(25.0, 200, taper="hamming")
