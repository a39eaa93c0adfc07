"""LightningCLI entry point: `stress-lightning fit|validate|test|predict --config conf/<experiment>.yaml`.

The same `main` is installed as the `lightning` command, which the `lightning` package no longer ships.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call on import

from lightning.fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only  # noqa: E402

import stress_lightning.data.mixed  # noqa: E402, F401  (MixedDataModule, importable by class_path)
from stress_lightning.commands import COMMANDS  # noqa: E402
from stress_lightning.commands import run as run_command  # noqa: E402
from stress_lightning.data.errors import CorpusError, VideoDecodeError  # noqa: E402
from stress_lightning.data.shards import ShardError  # noqa: E402
from stress_lightning.inference.loading import ModelLoadError  # noqa: E402
from stress_lightning.models.module import MultiTaskStressModule  # noqa: E402
from stress_lightning.registry import UnknownNameError  # noqa: E402
from stress_lightning.signals.errors import SignalError  # noqa: E402
from stress_lightning.storage import OutputFolderError  # noqa: E402
from stress_lightning.tracking.lifecycle import stop_exit_status  # noqa: E402
from stress_lightning.tracking.params import flatten_config, log_config  # noqa: E402
from stress_lightning.tracking.resume import checkpoint_run, prepare_resume  # noqa: E402
from stress_lightning.tracking.store import (  # noqa: E402
    StressMLFlowLogger,
    TrackingSyncError,
    TrackingUnavailableError,
    check_tracking_reachable,
    resolve_tracking_uri,
)

PROG = "stress-lightning"
PACKAGE_DIR = Path(__file__).resolve().parent
# The package's own errors about what the user gave it: the message names the file or option, a traceback adds nothing.
USER_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    OutputFolderError,
    CorpusError,
    ShardError,
    ModelLoadError,
    UnknownNameError,
    SignalError,
)
# Lightning's values for --ckpt_path that are not a file (resolved by Lightning or by tracking.resume).
SYMBOLIC_CHECKPOINTS = ("last", "best", "hpc", "registry")


class ConfigError(ValueError):
    """A config value or command-line option that cannot work, found before anything ran; the message names the
    option or file (exit status 2)."""


# -- errors as one line -------------------------------------------------------------------------------------------
_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":\s*(.*)$')
_CLASS_PROBLEM = re.compile(r"^Problem with given class_path '([^']+)':$")
_UNKNOWN_OPTION = re.compile(r"^Option '([^']+)' is not accepted$")
_EXPECTED = re.compile(r"^Expected a (.+?)(?:\. Got value: (.*))?$")
_NESTED_ARG = re.compile(r"^NestedArg\(key='[^']*', val=(.*)\)$")
# Lines of a Union report that only say how it is laid out.
_REPORT_LAYOUT = ("Does not validate against any of the Union subtypes", "Subtypes: ", "Errors:", "Given value type: ")


def _type_name(text: str) -> str:
    return re.sub(r"<class '(?:\w+\.)*(\w+)'>", r"\1", text).replace("typing.", "")


def _given_value(text: str) -> str | None:
    nested = _NESTED_ARG.match(text)
    value = nested.group(1).strip("'\"") if nested else text
    # A whole namespace or a long structure says nothing a person can act on.
    return None if len(value) > 60 or value.startswith(("Namespace(", "{")) else value


def condense_parse_error(message: str, subcommand: str | None = None) -> str:
    """jsonargparse's report of a rejected config -> one line naming the option (as a dotted config key) and what is
    wrong with it, e.g. `data.init_args.batch_size: expected int, got 'abc'`.

    The report nests `Parser key "..."` blocks and, inside a class, `Problem with given class_path '...'`; for a
    Union it lists what every alternative said. An error from inside a class wins over the other alternatives (a
    sub-config file path, None), the option is the chain of keys above it, and `Expected a ...` alternatives at
    the same place are merged.
    """
    help_hint = f"`{PROG} {subcommand} --help`" if subcommand else f"`{PROG} --help`"
    stack: list[tuple[int, str, str | None]] = []  # (indent, key, class_path)
    leaves: list[dict[str, Any]] = []
    givens: list[tuple[int, int, str]] = []  # (line number, indent, value)
    for number, raw in enumerate(message.splitlines()):
        text = raw.strip()
        if not text:
            continue
        indent = len(raw) - len(raw.lstrip())
        if text.startswith("- "):
            text, indent = text[2:], indent + 2
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if text.startswith("Given value: "):
            givens.append((number, indent, text[len("Given value: ") :]))
            continue
        if text.startswith(_REPORT_LAYOUT) or text == "Expected a <class 'NoneType'>":
            continue
        key = _PARSER_KEY.match(text)
        problem = _CLASS_PROBLEM.match(text)
        if key:
            stack.append((indent, key.group(1), None))
            text = key.group(2)
            if not text:
                continue
            indent += 1
        elif problem:
            stack.append((indent, "init_args", problem.group(1)))
            continue
        class_path = next((c for _, _, c in reversed(stack) if c), None)
        leaves.append(
            {"keys": [k for _, k, _ in stack], "class_path": class_path, "text": text, "line": number, "indent": indent}
        )
    if not leaves:
        return next((line.strip() for line in message.splitlines() if line.strip()), message)
    leaf = min(
        leaves,
        key=lambda lf: (lf["class_path"] is None, lf["text"].startswith("Expected a path but"), lf["line"]),
    )
    keys, text = list(leaf["keys"]), leaf["text"]
    unknown = _UNKNOWN_OPTION.match(text)
    if unknown:
        option = ".".join([*keys, unknown.group(1)])
        owner = ".".join(k for k in keys if k != "init_args")
        cls = (leaf["class_path"] or "").rpartition(".")[2]
        see = f"`{PROG} {subcommand or '<subcommand>'} --{owner}.help {cls}`" if owner and cls else help_hint
        return f"unknown option {option} ({cls or 'it'} takes no {unknown.group(1)!r}); see {see}"
    if leaf["class_path"] and keys and keys[-1] == "init_args":
        # The class itself could not be used (a class_path that does not import): name its option, not init_args.
        keys = keys[:-1]
        text = f"class_path {leaf['class_path']!r}: {text}"
    option = ".".join(keys)
    expected = _EXPECTED.match(text)
    if expected and ": " not in expected.group(1):
        types = []
        for other in leaves:
            match = _EXPECTED.match(other["text"])
            if not match or ": " in match.group(1) or other["text"].startswith("Expected a path but"):
                continue
            if other["keys"] == leaf["keys"] and _type_name(match.group(1)) not in types:
                types.append(_type_name(match.group(1)))
        given = expected.group(2)
        if given is None:
            # The Union's own `Given value:` line: the first one after the leaf, less indented than it.
            given = next((v for n, i, v in givens if n > leaf["line"] and i < leaf["indent"]), None)
            given = _given_value(given) if given is not None else None
        text = f"expected {' or '.join(types)}" + (f", got {given!r}" if given is not None else "")
    elif text:
        text = text[0].lower() + text[1:]
    if not option:
        return f"{text}; see {help_hint}" if text.startswith("unrecognized arguments") else text
    return f"{option}: {text}"


def _raised_here(err: BaseException) -> bool:
    """True when `err` comes from a `raise` statement of this package: a value its own code refused, not a bug
    surfacing from deeper down."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    return Path(last.filename).resolve().is_relative_to(PACKAGE_DIR) and (last.line or "").startswith("raise")


_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process \d+")


def _worker_error(err: BaseException) -> str | None:
    """The message of one of the package's input errors raised in a DataLoader worker. torch re-raises it in the main
    process as a RuntimeError holding the worker's traceback (the error classes take more than a message)."""
    match = _WORKER_ERROR.match(str(err))
    names = {cls.__name__ for cls in USER_INPUT_ERRORS} | {"VideoDecodeError"}
    if match is None or match.group(1) not in names:
        return None
    lines = re.findall(rf"^(?:[\w.]+\.)?{match.group(1)}: (.+)$", str(err), flags=re.MULTILINE)
    return lines[-1] if lines else None


def _option_holding(config: Any, value: Any) -> str | None:
    """The dotted config key whose value is `value` (a name a registry did not know), or None."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, item in node.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{prefix}[{index}]")
        elif isinstance(node, str) and node == value:
            found.append(prefix)

    if config is not None:
        walk(config.as_dict() if hasattr(config, "as_dict") else config, "")
    return found[0] if found else None


def reported_error(err: BaseException, started: bool) -> BaseException | None:
    """The error to report in one line (`error_message`), or None when it is not about the user's input: a bug, an
    interrupt, the parser's own SystemExit keep their traceback or status. `started`: work began (the MLflow run
    exists, the trainer got past preparing the data)."""
    if isinstance(err, (ConfigError, TrackingUnavailableError, TrackingSyncError, *USER_INPUT_ERRORS)):
        return err
    if _worker_error(err) is not None:
        return err
    if started or not isinstance(err, Exception):
        return None
    # Before work: jsonargparse reports what a class raised while being built inside a Union error, whose cause is
    # the class's own error. The package's error types are the user's input; so is a ValueError or TypeError from
    # one of its `raise` statements (a value it refused: a corpus option of the wrong type), not one from deeper.
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    own = next((e for e in chain if isinstance(e, (ConfigError, *USER_INPUT_ERRORS))), None)
    if own is not None:
        return own
    refused = next((e for e in chain if isinstance(e, (ValueError, TypeError)) and _raised_here(e)), None)
    return ConfigError(str(refused)) if refused is not None else None


def stop_status(err: BaseException) -> int | None:
    """The exit status of a fit stopped by a signal (128 + its number: 130 SIGINT, 143 SIGTERM; the run ended KILLED
    with a checkpoint, tracking.lifecycle), or None for any other end. Lightning ends a SIGTERM stop with a
    SystemExit of status 0 and a Ctrl+C with status 1: a script or scheduler would take either for something else."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(err, SIGTERMException):
        return stop_exit_status() or 128 + signal.SIGTERM
    if isinstance(err, KeyboardInterrupt):
        return 128 + signal.SIGINT
    if isinstance(err, SystemExit) and stop_exit_status() is not None:
        return stop_exit_status()
    return None


def exit_status(err: BaseException, started: bool) -> int:
    """The exit status for an error `reported_error` returned: 2, a usage or config error (nothing started, no
    MLflow run); 1, input that cannot be read, a failure during work, a tracking store that is away."""
    if isinstance(err, ConfigError):
        return 2
    if isinstance(err, (TrackingUnavailableError, TrackingSyncError)):
        return 1
    if isinstance(err, VideoDecodeError) or _worker_error(err) is not None:
        return 1  # a file that cannot be decoded is unreadable input, whenever it is found
    return 1 if started else 2


def error_message(err: BaseException, config: Any = None) -> str:
    """The line printed after `error: ` for an error `reported_error` returned."""
    worker = _worker_error(err)
    if worker is not None:
        return worker
    if isinstance(err, UnknownNameError):
        option = _option_holding(config, err.name)
        return f"{option}: {err}" if option else str(err)
    return str(err)


# -- checkpoints given with --ckpt_path ---------------------------------------------------------------------------
def _torch_reason(err: BaseException) -> str:
    text = str(err)
    if "WeightsUnpickler error:" in text:
        # torch's weights_only message is a paragraph of advice around the one line that says what it found.
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line if len(line) <= 160 else line[:157] + "..."
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def read_checkpoint_arg(value: str) -> dict[str, Any] | None:
    """The checkpoint `--ckpt_path value` names, read as plain data (weights_only, memory-mapped: nothing in it
    runs), or None for Lightning's symbolic values (last, best, hpc, registry[:...]) and remote URLs.

    Raises ConfigError naming the path when there is no such file or torch cannot read it as a checkpoint.
    """
    if value in SYMBOLIC_CHECKPOINTS or value.startswith("registry:") or "://" in value:
        return None
    import torch

    path = Path(value)
    if not path.exists():
        raise ConfigError(f"--ckpt_path {value}: no such file")
    if path.is_dir():
        raise ConfigError(f"--ckpt_path {value}: a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise ConfigError(f"--ckpt_path {value}: an empty file, not a checkpoint")
    try:
        # mmap needs torch's zip format; an older or foreign file is read whole (it is then small or not one).
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - every way torch fails to read a file is reported, with its reason
        raise ConfigError(f"--ckpt_path {value}: not a checkpoint torch can read ({_torch_reason(err)})") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        what = "no state_dict" if isinstance(checkpoint, dict) else f"it holds a {type(checkpoint).__name__}"
        raise ConfigError(f"--ckpt_path {value}: not a Lightning checkpoint ({what})")
    return checkpoint


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in tensor.shape)


def check_checkpoint_fits(value: str, checkpoint: dict[str, Any], model: LightningModule) -> None:
    """Raise ConfigError when the checkpoint's weights cannot load into the model this config builds: heads trained
    for another taxonomy (Lightning's "size mismatch for ..." once the run had started), another architecture."""
    hparams = checkpoint.get("hyper_parameters") or {}
    for option, attribute, head in (
        ("expression_classes", "expression_names", "expression"),
        ("stress_levels", "stress_names", "stress"),
    ):
        theirs, ours = hparams.get(option), getattr(model, attribute, None)
        if isinstance(theirs, list) and ours is not None and list(theirs) != list(ours):
            raise ConfigError(
                f"--ckpt_path {value}: its {head} head was trained for {len(theirs)} classes "
                f"({', '.join(map(str, theirs))}), this config's data.init_args.{option} has {len(ours)} "
                f"({', '.join(map(str, ours))})"
            )
    state, own = checkpoint["state_dict"], model.state_dict()
    for key, tensor in state.items():
        if key in own and hasattr(tensor, "shape") and _shape(tensor) != _shape(own[key]):
            raise ConfigError(
                f"--ckpt_path {value}: {key} has shape {_shape(tensor)} there and {_shape(own[key])} in the model "
                "this config builds (trained with another architecture or taxonomy)"
            )
    if getattr(model, "strict_loading", True):
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            keys = ", ".join((missing or unexpected)[:3])
            which = "lacks weights the model has" if missing else "has weights the model lacks"
            raise ConfigError(f"--ckpt_path {value}: the checkpoint {which} ({keys}, ...): another architecture")


class _WorkStarted(Callback):
    """Marks that the trainer got past preparing the data (its callbacks are set up, the MLflow run is made there)."""

    def __init__(self) -> None:
        self.seen = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.seen = True


class CliState:
    """What `main` needs when the CLI fails: the parsed config (to name the option that held a bad name) and
    whether work had started (which decides between exit status 2 and 1)."""

    def __init__(self) -> None:
        self.config: Any = None
        self.trainer: Trainer | None = None
        self.marker = _WorkStarted()

    @property
    def started(self) -> bool:
        loggers = self.trainer.loggers if self.trainer is not None else []
        return self.marker.seen or any(getattr(lg, "run_created", False) for lg in loggers)


class StressArgumentParser(LightningArgumentParser):
    """LightningArgumentParser whose usage errors are one line naming the option (`condense_parse_error`), not
    jsonargparse's report of every Union alternative it tried. Exit status 2, as before."""

    # Set by the CLI, for the `--help` it suggests (jsonargparse keeps `subcommand` for itself).
    usage_subcommand: str | None = None

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Nested parsers (exit_on_error=False) raise for their parent to report; JSONARGPARSE_DEBUG keeps the report.
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)
        if rank_zero_only.rank == 0:
            sys.stderr.write(f"error: {condense_parse_error(message, self.usage_subcommand)}\n")
        self.exit(2)


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Logs the resolved config to the MLflow run: the YAML as an artifact and every key as a flat parameter."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        if not loggers or trainer.global_rank != 0:
            return
        yaml_text = self.parser.dump(self.config, skip_none=False)
        flat = flatten_config(self.config.as_dict())
        for logger in loggers:
            log_config(logger.run_id, yaml_text, flat, client=logger.experiment)


class StressLightningCLI(LightningCLI):
    """LightningCLI with MLflow tracking and errors a user can act on: a bad option, file or checkpoint is one
    line naming it, found before the trainer runs (`state` tells `main` whether work had started)."""

    def __init__(self, *args: Any, state: CliState | None = None, **kwargs: Any) -> None:
        # LightningCLI parses, builds and runs inside __init__: the state must be in place first.
        self.state = state or CliState()
        self._checkpoint: dict[str, Any] | None = None
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        argv = sys.argv[1:] if args is None else args
        subcommand = next((a for a in argv if isinstance(a, str) and a in self.subcommands()), None)
        for each in (parser, *getattr(self, "_subcommand_parsers", {}).values()):
            each.usage_subcommand = subcommand
        super().parse_arguments(parser, args)
        self.state.config = self.config.get(subcommand) if subcommand else self.config

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint here (its hyperparameters), before anything is built: a missing or
        # unreadable file is reported now, naming it, instead of a torch traceback or a FileNotFoundError once the
        # MLflow run exists.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path:
            self._checkpoint = read_checkpoint_arg(str(ckpt_path))
        super()._parse_ckpt_path()

    def _check_checkpoint(self, ckpt_path: Any) -> None:
        """Before the trainer runs: does the checkpoint's state fit the model this config built?"""
        if not ckpt_path:
            return
        checkpoint, self._checkpoint = self._checkpoint, None  # read once; not held (memory-mapped) while training
        if checkpoint is None or str(ckpt_path) != str(self.config[self.subcommand].get("ckpt_path")):
            checkpoint = read_checkpoint_arg(str(ckpt_path))  # `last`, resolved to a file by tracking.resume
        if checkpoint is not None:
            check_checkpoint_fits(str(ckpt_path), checkpoint, self.model)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as err:
            # Trainer.__init__ checks its arguments (max_epochs, accelerator, devices, precision, ...).
            raise ConfigError(f"trainer: {err}") from err
        self.state.trainer = trainer
        return trainer

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, test the best checkpoint on the held-out split (this runs export and registration "
            "callbacks). Used by `fit` only.",
        )
        for name in (
            "expression_classes",
            "stress_levels",
            "fps",
            "roi_frames",
            "face_frames",
            "face_size",
            "roi_size",
        ):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.link_arguments("data.corpus_names", "model.init_args.corpora", apply_on="instantiate")
        parser.link_arguments("data.face_pipeline", "model.init_args.face_pipeline", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # Before anything is built: an MLflow logger's client opens a database store as it is constructed, and a
        # failure inside jsonargparse's instantiation would surface as "does not validate against any of the Union
        # subtypes". Probe each configured MLflow store first and fail with its name. Every DDP rank probes, though
        # only rank 0 logs: a rank that went on alone would wait for the failed ones at the process-group rendezvous.
        config = self.config[self.subcommand] if self.subcommand else self.config
        for uri in _configured_tracking_uris(config):
            check_tracking_reachable(uri)
        super().instantiate_classes()

    # A fit resumed from a checkpoint continues the checkpoint's MLflow run (the stores were probed before the
    # classes were built, in instantiate_classes).
    def _weights_only(self) -> None:
        # Lightning 2.6 passes weights_only=None to torch.load, which torch reads as True unless the environment
        # says otherwise (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD): say True here, so a checkpoint never runs code unless
        # the user asks with `--weights_only false`.
        config = self.config_init[self.subcommand]
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True

    def before_fit(self) -> None:
        self._weights_only()
        logger = next((lg for lg in self.trainer.loggers if isinstance(lg, StressMLFlowLogger)), None)
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        self._resume_step = None
        self._check_checkpoint(ckpt_path)  # a file: does it fit, before its run is looked up
        if logger is not None and ckpt_path:
            resolved, self._resume_step = prepare_resume(self.trainer, logger, str(ckpt_path))
            self.config_init[self.subcommand]["ckpt_path"] = resolved
            if resolved != ckpt_path:
                self._check_checkpoint(resolved)  # `last`, now a file

    def _tag_checkpoint_source(self) -> None:
        # validate/test/predict from a checkpoint log to a run of their own that names the checkpoint's run.
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        for logger in self.trainer.loggers:
            if isinstance(logger, StressMLFlowLogger) and ckpt_path and os.path.isfile(str(ckpt_path)):
                info = checkpoint_run(str(ckpt_path)) or {}
                tags = {"checkpoint.path": os.path.abspath(str(ckpt_path))}
                if info.get("run_id"):
                    tags["checkpoint.run_id"] = info["run_id"]
                logger.tags = {**(logger.tags or {}), **tags}

    def _before_evaluation(self) -> None:
        self._weights_only()
        self._check_checkpoint(self.config_init[self.subcommand].get("ckpt_path"))
        self._tag_checkpoint_source()

    def before_validate(self) -> None:
        self._before_evaluation()

    def before_test(self) -> None:
        self._before_evaluation()

    def before_predict(self) -> None:
        self._before_evaluation()

    def after_fit(self) -> None:
        trainer = self.trainer
        if not self.config[self.subcommand].get("test_after_fit", True) or trainer.interrupted:
            return
        if trainer.fast_dev_run:
            return
        resume_step = getattr(self, "_resume_step", None)
        if resume_step is not None and trainer.global_step <= resume_step:
            # A resumed fit that had nothing left to train: testing again would register the same model again.
            rank_zero_info(
                f"Resumed at step {resume_step} with nothing left to train (raise trainer.max_epochs to continue); "
                "not testing or registering again"
            )
            return
        callback = trainer.checkpoint_callback
        ckpt_path = "best" if callback is not None and getattr(callback, "best_model_path", "") else None
        trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=True)


def _configured_tracking_uris(config: Any) -> list[str]:
    """The tracking URIs of the MLflow loggers in a parsed config (`trainer.logger`: one entry or a list)."""
    import importlib

    trainer = config.get("trainer") if hasattr(config, "get") else None
    entries = trainer.get("logger") if trainer is not None and hasattr(trainer, "get") else None
    uris = []
    for entry in entries if isinstance(entries, list) else [entries]:
        class_path = getattr(entry, "class_path", None)
        if not isinstance(class_path, str) or "." not in class_path:
            continue
        module_name, _, class_name = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # jsonargparse reports an unknown class itself
        if not (isinstance(cls, type) and issubclass(cls, MLFlowLogger)):
            continue
        init_args = getattr(entry, "init_args", None)
        try:
            uris.append(resolve_tracking_uri(getattr(init_args, "tracking_uri", None)))
        except ValueError:
            continue  # a URI this package does not resolve (a file store given to Lightning's own logger)
    return uris


def _config_paths(args: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def _check_config_files(args: list[str]) -> None:
    """Fail with the file named when a --config file is not valid YAML (jsonargparse reports only the line)."""
    for path in _config_paths(args):
        if not os.path.isfile(path):
            continue  # jsonargparse names a missing file itself
        try:
            with open(path, encoding="utf-8") as handle:
                yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{path}: not valid YAML ({where}{problem})") from None


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        # COMMANDS (`data`, `promote`, `sync`, ...) are argparse programs of their own; the rest is LightningCLI.
        code = run_command(argv)
        if code:
            raise SystemExit(code)
        return
    state = CliState()
    try:
        _check_config_files(argv)
        _run_cli(args, state)
    except BaseException as err:
        # The one place where failures become exit statuses; what `reported_error` does not know is re-raised as it
        # is, with its traceback (a bug, the parser's own SystemExit).
        stopped = stop_status(err)
        if stopped is not None:
            raise SystemExit(stopped) from None
        reported = reported_error(err, state.started)
        if reported is None:
            raise
        if rank_zero_only.rank == 0:  # every DDP rank fails alike; one message is enough
            print(f"error: {error_message(reported, state.config)}", file=sys.stderr)
        raise SystemExit(exit_status(reported, state.started)) from None


def _run_cli(args: list[str] | None, state: CliState | None = None) -> None:
    state = state or CliState()
    StressLightningCLI(
        MultiTaskStressModule,
        # Any LightningDataModule with the linked attributes: ClipDataModule (one corpus), MixedDataModule.
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=MLflowSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        parser_class=StressArgumentParser,
        trainer_defaults={"callbacks": [state.marker]},
        args=args,
        auto_configure_optimizers=False,
        state=state,
    )


if __name__ == "__main__":
    main()
