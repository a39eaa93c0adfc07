"""`stress-lightning models [--json]`: the registered architecture names by kind; `models list` is unchanged."""

from __future__ import annotations

import json

import pytest

from stress_lightning.cli import main
from stress_lightning.commands.models import KINDS, architecture_names
from stress_lightning.models.registry import (
    BODY_BACKBONES,
    RPPG_BACKBONES,
    SPATIAL_BACKBONES,
    STRESS_CLASSIFIERS,
    TEMPORAL_BACKBONES,
)

# Names registered when this command was written; later additions only add to them.
AT_LEAST = {
    "spatial": {"efficientnet_b0", "resnet18", "conv4"},
    "temporal": {"i3d_r50", "r3d_18", "c3d_small"},
    "body": set(),
    "rppg": {"rppg_cnn"},
    "stress": {"stress_mlp", "random_forest", "svm"},
}


def test_json_lists_every_kind_sorted(capsys: pytest.CaptureFixture) -> None:
    main(["models", "--json"])  # exit status 0: main returns instead of raising SystemExit
    names = json.loads(capsys.readouterr().out)
    assert list(names) == ["spatial", "temporal", "body", "rppg", "stress"] == list(KINDS)
    for kind, values in names.items():
        assert values == sorted(values) and AT_LEAST[kind] <= set(values), kind
    assert names["spatial"] == SPATIAL_BACKBONES.names() and names["temporal"] == TEMPORAL_BACKBONES.names()
    assert names["body"] == BODY_BACKBONES.names() and names["rppg"] == RPPG_BACKBONES.names()
    # The neural stress head and the scikit-learn classifiers; no expression or HRV head.
    assert set(STRESS_CLASSIFIERS.names()) <= set(names["stress"])
    assert not {"expression_mlp", "hrv_mlp"} & set(names["stress"])
    assert names == architecture_names()


def test_text_is_one_line_per_kind(capsys: pytest.CaptureFixture) -> None:
    main(["models"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(KINDS)
    by_kind = {kind: line.split(": ", 1)[1] for kind, line in zip(KINDS, lines, strict=True)}
    assert "efficientnet_b0" in by_kind["spatial"].split(", ")
    assert {"random_forest", "svm", "stress_mlp"} <= set(by_kind["stress"].split(", "))


def test_help_names_the_kinds_and_list_keeps_its_own(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--json" in out and all(kind in out for kind in KINDS)
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "list", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--tracking-uri" in out and "--name" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "zoo"])
    assert exit_info.value.code == 2 and "invalid choice: 'zoo'" in capsys.readouterr().err
