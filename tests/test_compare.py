"""`stress-lightning compare`: the comparison file is checked before anything runs, `--dry-run` prints the exact fit
commands, a real comparison (conf/compare/smoke.yaml's runs plus one that fails) trains into one MLflow experiment
and writes the table from what MLflow holds; and every experiment part parses over the CPU size preset."""

from __future__ import annotations

import inspect
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from stress_lightning.commands import COMMANDS
from stress_lightning.commands import run as run_command
from stress_lightning.commands.compare import TAG_COMPARE, TAG_ROLE, TAG_RUN, load_comparison

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT_PARTS = sorted((REPO / "conf" / "experiment").glob("*.yaml"))
COMPARISONS = sorted((REPO / "conf" / "compare").glob("*.yaml"))


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config paths in comparison files are relative to the current directory, the repository's root here."""
    monkeypatch.chdir(REPO)
    return REPO


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _valid() -> dict:
    return {
        "experiment": "e",
        "base": ["conf/synthetic.yaml", "conf/tiny.yaml"],
        "metrics": ["test/stress_f1"],
        "runs": [{"name": "a"}, {"name": "b", "configs": ["conf/experiment/full.yaml"]}],
    }


def test_compare_is_a_command_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert "compare" in COMMANDS
    with pytest.raises(SystemExit) as exit_info:
        run_command(["compare", "--help"])
    assert exit_info.value.code == 0
    assert "--dry-run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("experiment"), r"missing key\(s\) \['experiment'\]"),
        (lambda d: d.pop("runs"), r"missing key\(s\) \['runs'\]"),
        (lambda d: d.update(run=[]), r"unknown key\(s\) \['run'\]"),
        (lambda d: d.update(runs=[]), r"runs: expected a non-empty list"),
        (lambda d: d.update(metrics="test/stress_f1"), r"metrics: expected a list"),
        (lambda d: d["base"].append("conf/nope.yaml"), r"base: config file conf/nope.yaml does not exist"),
        (
            lambda d: d["runs"][1].update(configs=["conf/experiment/missing.yaml"]),
            r"runs\[1\] \(b\): configs: config file conf/experiment/missing.yaml does not exist",
        ),
        (lambda d: d["runs"].append({"name": "a"}), r"runs\[2\] \(a\): name 'a' is used twice"),
        (lambda d: d["runs"].append({"configs": []}), r"runs\[2\]: name: expected"),
        (lambda d: d["runs"].append({"name": "a b"}), r"runs\[2\]: name: expected .* got 'a b'"),
        (lambda d: d["runs"][0].update(config=["x"]), r"runs\[0\] \(a\): unknown key\(s\) \['config'\]"),
        (lambda d: d["runs"][0].update(overrides=["lr=1"]), r"runs\[0\] \(a\): overrides: 'lr=1' is not a command"),
    ],
)
def test_bad_comparison_file_is_a_usage_error_naming_file_and_key(
    in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], change, expected: str
) -> None:
    data = _valid()
    change(data)
    path = _write(tmp_path / "bad.yaml", data)
    assert run_command(["compare", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: "), err
    assert re.search(expected, err), err


def test_comparison_that_is_not_yaml_or_absent(in_repo: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [\n", encoding="utf-8")
    assert run_command(["compare", "--config", str(bad), "--dry-run"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert run_command(["compare", "--config", str(tmp_path / "absent.yaml"), "--dry-run"]) == 2
    assert "comparison file does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("path", COMPARISONS, ids=lambda p: p.stem)
def test_shipped_comparisons_are_valid(in_repo: Path, path: Path) -> None:
    comparison = load_comparison(path.relative_to(REPO))
    assert comparison.runs and comparison.metrics


def test_dry_run_prints_each_fit_command(in_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "abl.md"
    code = run_command(
        [
            "compare",
            "--config",
            "conf/compare/ablations.yaml",
            "--dry-run",
            "--out",
            str(out),
            "--only",
            "no_hrv",
            "full",
        ]
    )
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stress-lightning ")]
    assert len(lines) == 2  # file order, not --only order
    args = shlex.split(lines[0])
    assert args[:2] == ["stress-lightning", "fit"]
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert configs == [
        "conf/synthetic.yaml",
        "conf/size/cpu.yaml",
        "conf/experiment/full.yaml",
        "conf/experiment/stress_classic.yaml",
    ]
    assert f"--trainer.default_root_dir={tmp_path / 'abl' / 'full'}" in args
    assert "--trainer.logger.init_args.experiment_name=stress-lightning-ablations" in args
    assert "--trainer.logger.init_args.run_name=full" in args
    tags = json.loads(next(a for a in args if a.startswith("--trainer.logger.init_args.tags=")).split("=", 1)[1])
    assert tags[TAG_COMPARE] == "ablations" and tags[TAG_RUN] == "full"
    assert "conf/experiment/no_hrv.yaml" in lines[1]
    assert not out.exists() and not (tmp_path / "abl").exists()  # a dry run writes nothing


def test_dry_run_base_and_experiment_options(in_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--config", "conf/compare/video_models.yaml", "--dry-run", "--only", "sistcm"]
    assert run_command([*argv, "--base", "conf/synthetic.yaml", "conf/size/gpu.yaml", "--experiment", "gpu-x"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("stress-lightning "))
    assert "--config conf/synthetic.yaml --config conf/size/gpu.yaml --config conf/experiment/sistcm.yaml" in line
    assert "experiment_name=gpu-x" in line
    with pytest.raises(SystemExit) as exit_info:
        run_command([*argv[:-1], "nope"])
    assert exit_info.value.code == 2
    assert "has no run(s) ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_command([*argv, "--out", "outputs/compare/table"])
    assert "--out outputs/compare/table: expected a file name ending in .md" in capsys.readouterr().err


def test_real_comparison_with_a_failing_run(
    in_repo: Path, tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conf/compare/smoke.yaml's runs on a corpus of the test's own, with a run that fails in between: the table
    holds both trained runs with the metrics MLflow holds, and the failure with its log; exit status 1."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    smoke = yaml.safe_load((REPO / "conf" / "compare" / "smoke.yaml").read_text(encoding="utf-8"))
    assert len(smoke["runs"]) == 2
    data = {
        **smoke,
        "overrides": [
            f"--data.init_args.root={tmp_path / 'corpus'}",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        ],
        "runs": [smoke["runs"][0], {"name": "bad", "overrides": ["--model.init_args.lr=fast"]}, smoke["runs"][1]],
    }
    config = _write(tmp_path / "smoke.yaml", data)
    out = tmp_path / "table.md"
    assert run_command(["compare", "--config", str(config), "--out", str(out)]) == 1

    client = mlflow.MlflowClient(store_uri)
    experiment = client.get_experiment_by_name(smoke["experiment"])
    runs = client.search_runs([experiment.experiment_id])
    trained = {r.data.tags.get(TAG_RUN): r for r in runs if r.data.tags.get(TAG_ROLE) != "summary"}
    names = [r["name"] for r in smoke["runs"]]
    assert sorted(trained) == sorted(names)  # the failed run never reached MLflow
    table = out.read_text(encoding="utf-8")
    assert f"command: `stress-lightning compare --config {config} --out {out}`" in table
    assert "git commit: `" in table and "machine: " in table
    rows: dict[str, str] = {}
    for line in table.splitlines():  # the metrics table comes first; the configs table repeats the names
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0].strip("| `"), line)
    for name in names:
        run = trained[name]
        assert run.info.run_name == name and run.data.tags[TAG_COMPARE] == "smoke"
        row = rows[name]
        assert f"| ok | `{run.info.run_id}` |" in row
        for metric in smoke["metrics"]:
            assert f"{run.data.metrics[metric]:.3f}" in row, (metric, row)
    assert "failed (exit 2" in rows["bad"] and str(tmp_path / "table" / "bad.log") in rows["bad"]
    assert "model.init_args.lr" in (tmp_path / "table" / "bad.log").read_text(encoding="utf-8")

    summary = next(r for r in runs if r.data.tags.get(TAG_ROLE) == "summary")
    assert summary.data.tags["mlflow.note.content"] == table
    assert {a.path for a in client.list_artifacts(summary.info.run_id, "compare")} >= {"compare/table.md"}
    logs = {a.path for a in client.list_artifacts(summary.info.run_id, "compare/logs")}
    assert logs == {f"compare/logs/{n}.log" for n in ["bad", *names]}


# -- experiment parts ---------------------------------------------------------------------------------------------
def _print_config(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *configs: str) -> dict:
    """`stress-lightning fit --print_config --config ...` in this process (the imports are paid once), parsed."""
    from stress_lightning.cli import main

    monkeypatch.setattr("sys.argv", ["stress-lightning"])  # LightningCLI warns when pytest's argv is there too
    args = ["fit", "--print_config"]
    for config in configs:
        args += ["--config", config]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return yaml.safe_load(captured.out)


@pytest.mark.parametrize("part", EXPERIMENT_PARTS, ids=lambda p: p.stem)
def test_experiment_part_parses_over_cpu_size(
    in_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, part: Path
) -> None:
    """`stress-lightning fit --print_config --config conf/synthetic.yaml --config conf/size/cpu.yaml --config <part>`
    exits 0; `net` is a plain dict to the parser, so its keys and backbone names are checked against MultiTaskNet
    and the registries here."""
    from stress_lightning.models.net import MultiTaskNet
    from stress_lightning.models.registry import (
        BODY_BACKBONES,
        RPPG_BACKBONES,
        SPATIAL_BACKBONES,
        TEMPORAL_BACKBONES,
    )

    config = _print_config(
        capsys, monkeypatch, "conf/synthetic.yaml", "conf/size/cpu.yaml", str(part.relative_to(REPO))
    )
    net = config["model"]["init_args"]["net"] or {}
    accepted = set(inspect.signature(MultiTaskNet.__init__).parameters) - {"self"}
    assert set(net) <= accepted, f"{part.name}: MultiTaskNet takes no {sorted(set(net) - accepted)}"
    registries = {
        "spatial_backbone": SPATIAL_BACKBONES,
        "temporal_backbone": TEMPORAL_BACKBONES,
        "rppg_backbone": RPPG_BACKBONES,
        "body_backbone": BODY_BACKBONES,
    }
    for key, registry in registries.items():
        if net.get(key) is not None:
            assert net[key] in registry, f"{part.name}: {key} {net[key]!r} is not registered ({registry.names()})"
    assert set(net.get("streams", [])) <= {"spatial", "temporal", "rppg"}
    assert set(net.get("stress_inputs", [])) <= {"expression", "hrv", "rppg_features", "context"}
    # The size preset: the zoo's callbacks, no registration.
    callbacks = [c["class_path"].rsplit(".", 1)[1] for c in config["trainer"]["callbacks"]]
    assert "RegistryCallback" not in callbacks and "ExportCallback" in callbacks


def test_gpu_size_is_the_gpu_trainer_preset(
    in_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """conf/size/gpu.yaml repeats the keys where conf/trainer/gpu.yaml differs from the CPU trainer (it cannot
    load that file without its registering callbacks): they must stay equal."""
    config = _print_config(capsys, monkeypatch, "conf/synthetic.yaml", "conf/size/gpu.yaml")
    gpu = yaml.safe_load((REPO / "conf" / "trainer" / "gpu.yaml").read_text(encoding="utf-8"))
    cpu = yaml.safe_load((REPO / "conf" / "trainer" / "cpu.yaml").read_text(encoding="utf-8"))
    differing = {k for k in gpu if k != "callbacks" and gpu[k] != cpu.get(k)}
    assert differing and all(config["trainer"][k] == gpu[k] for k in differing), differing
    assert "RegistryCallback" not in str(config["trainer"]["callbacks"])


def test_smaller_is_better_for_errors_losses_and_fairness_gaps() -> None:
    from stress_lightning.commands.compare import _lower_is_better

    assert _lower_is_better("test/hr_mae_bpm") and _lower_is_better("val/loss")
    assert _lower_is_better("test/fairness/gender/gap/expression_acc")
    assert not _lower_is_better("test/stress_f1") and not _lower_is_better("test/fairness/gender/male/stress_f1")
