"""The load pass: everything the options and files can tell is checked before the model loads (a bad --epochs or
--out must not cost a pruning run), then the model, the input shape and the calibration data in that shape."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from edge_compress.device_profiles import load_profile
from edge_compress.export import ExportError

from .. import accuracy as acc
from ..search.budget import BudgetSpec
from ..calib import CalibData, load_calibration, synthetic_calibration
from ..config import CompressConfig, MeasureConfig, RecoveryOptions
from ..criteria.defaults import DATA_FREE_DEFAULT, resolve_criterion
from ..criteria.registry import make_criterion
from ..errors import InputError
from ..costmodel.host import fitted_for_this_machine, for_this_machine
from ..model_io import LoadedModel, load_model
from ..output import check_out_dir

log = logging.getLogger("compress")


@dataclass(frozen=True)
class Plan:
    """What the options say, checked: the profile, the budget asked for, the criterion, where the output goes."""
    profile: Any
    spec: BudgetSpec
    criterion_name: str
    criterion: Any                 # the criterion object (it keeps its scoring details for the report)
    recovery: RecoveryOptions
    device: Any                    # an SshConnection for --device, or None
    out: Path
    inputs: tuple[Path, ...]       # the user's files: the output folder must not overwrite them
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Loaded:
    model: LoadedModel
    shape: tuple[int, int, int, int]
    calib: CalibData
    task: Any                      # accuracy.Task: what the outputs are
    example: torch.Tensor          # one batch of real data at the profile's batch size
    notes: tuple[str, ...]


def plan(config: CompressConfig) -> Plan:
    notes = []
    profile = load_profile(config.target)   # its cost model is adapted to this machine after loading (on_this_machine)
    calib, recover = config.calibration, config.recover
    name, note = resolve_criterion(config.prune.criterion, calib.calib is not None, bool(recover.train_data))
    if note:   # why `auto` chose what it did; a warning only when no information could be measured
        notes.append(note)
        (log.warning if name == DATA_FREE_DEFAULT else log.info)(note)
    criterion = make_criterion(name, config.prune.criterion_options)
    b = config.budget
    spec = BudgetSpec.from_options(b.latency_ms, b.speedup, b.memory_mb, b.macs, b.params,
                                   profile.budget.latency_ms, profile.budget.memory_mb)
    recovery = config.recovery_options()
    device = ssh_device(config.measure)
    if recover.train_data is not None:
        _check_data_spec(recover.train_data, "--train-data")
    if calib.calib is not None:
        _check_data_spec(calib.calib, "--calib")
    model = config.load.model
    in_memory = isinstance(model, nn.Module)
    if not in_memory and config.load.example_input is not None:
        raise InputError("example_input is for a model passed as an nn.Module; a model file's input shape "
                         "comes from --arch, --input-shape or --calib")
    inputs = tuple(Path(p) for p in (None if in_memory else model, calib.calib, recover.train_data, config.target)
                   if p is not None)
    stem = type(model).__name__ if in_memory else Path(model).stem
    out = Path(config.output.out) if config.output.out else Path("compressed") / f"{stem}-{profile.name}"
    check_out_dir(out, list(inputs))
    return Plan(profile, spec, name, criterion, recovery, device, out, inputs, tuple(notes))


def on_this_machine(config: CompressConfig, plan: Plan, loaded: Loaded) -> Plan:
    """The plan with its cost model adapted to the machine that measures, once the inputs have been checked: a host
    cost model fitted on another CPU is fitted here where it will price a latency budget (costmodel/host.py), and
    otherwise has its reference rates re-measured."""
    prices_latency = plan.spec.latency_ms is not None or plan.spec.speedup is not None
    if prices_latency and loaded.model.prunable and plan.device is None and not config.measure.no_cost_fit:
        profile, note = fitted_for_this_machine(plan.profile)
    else:
        profile, note = for_this_machine(plan.profile)
    return replace(plan, profile=profile, notes=plan.notes + ((note,) if note else ()))


def ssh_device(m: MeasureConfig):
    """An SshConnection for --device user@host[:port], or None (the profile may name its own device)."""
    if not m.device:
        return None
    from edge_compress.deploy import SshConnection
    return SshConnection.from_address(m.device, identity_file=m.ssh_key, known_hosts=m.known_hosts,
                     remote_python=m.device_python or "python3")


def load(config: CompressConfig, plan: Plan) -> Loaded:
    c = config.load
    if isinstance(c.model, nn.Module):
        loaded = _module_input(config)
    else:
        loaded = load_model(c.model, c.arch, c.arch_kwargs, c.trust_model)
    shape, calib, notes = _shape_and_calibration(config, loaded, plan.profile)
    task, note = _task(loaded, calib)
    notes += [note] if note else []
    _check_criterion_labels(plan.criterion, task, calib)
    # The example batch is real data; a batch larger than the calibration set repeats its samples.
    example = calib.x[torch.arange(shape[0]) % len(calib)].clone()
    return Loaded(loaded, shape, calib, task, example, tuple(notes))


def _shape_and_calibration(config: CompressConfig, loaded: LoadedModel, profile):
    """The input shape (from --input-shape, else the built-in architecture, else the calibration data; the batch
    from the profile) and the calibration data in that shape."""
    c, data, info = config.load, config.calibration, loaded.arch_info
    batch = profile.measurement.batch_size
    chw: tuple[int, ...] | None = None
    if c.input_shape:
        s = tuple(int(v) for v in c.input_shape)
        if len(s) == 3:
            s = (batch, *s)
        if len(s) != 4 or min(s) < 1:
            raise InputError(f"--input-shape {'x'.join(map(str, c.input_shape))} must be NxCxHxW with positive "
                             "sizes, e.g. 1x3x32x32")
        batch, chw = s[0], s[1:]
    elif info is not None:
        chw = info.input_shape
    elif c.example_input is not None:
        chw = _example_chw(c.example_input)
    elif data.calib is None:
        raise InputError("the input shape is unknown for this model: pass --input-shape NxCxHxW (e.g. "
                         "1x3x224x224) or --calib data of that shape"
                         + (" (or example_input=, a tensor of that shape)" if loaded.kind == "module" else ""))
    mean = data.mean or (info.mean if info else None)
    std = data.std or (info.std if info else None)
    notes = []
    if data.calib is None:
        log.warning("no --calib given: using synthetic inputs for verification only; give real data for "
                    "BatchNorm re-estimation and meaningful parity and accuracy numbers")
        calib = synthetic_calibration(tuple(chw), min(data.calib_samples, 64), config.seed)
    else:
        calib = load_calibration(data.calib, tuple(chw) if chw else None, data.calib_samples, mean, std, config.seed)
        if chw is None:
            log.info("input shape %s taken from the calibration data (batch %d from the profile)",
                     "x".join(map(str, calib.input_shape)), batch)
        if "only" in calib.normalisation:
            notes.append(f"calibration data normalisation: {calib.normalisation}")
            log.warning("calibration data: %s", calib.normalisation)
    return (batch, *calib.input_shape), calib, notes


def _task(loaded: LoadedModel, calib: CalibData):
    """The model's task from its outputs on the calibration data; a classifier's own predictions label data that
    has no labels (so accuracy is agreement with the original)."""
    task, preds = None, []
    for i in range(0, len(calib), 64):
        try:
            with torch.no_grad():
                outs = acc.output_tensors(loaded.module(calib.x[i:i + 64]))
        except ExportError as e:   # what the model returns is not tensors (or tuples, lists, dicts of them)
            raise InputError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - the user's model on the user's data; say it plainly
            raise InputError(f"the model does not run on the calibration data of shape "
                             f"{tuple(calib.x.shape[1:])} ({type(e).__name__}: {str(e)[:120]}); check "
                             "--input-shape and --calib") from None
        bad = [name for name, t in outs if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            big = float(calib.x.abs().max())
            raise InputError(f"the model's outputs on the calibration data are not finite ({', '.join(bad[:4])}; "
                             f"inputs reach {big:.3g}); pass normalised data (or --mean/--std for 8-bit images)")
        if task is None:
            task = acc.detect_task(outs, calib.y)
        if task.kind == acc.CLASSIFICATION:
            preds.append(acc.predictions(outs))
    assert task is not None
    note = acc.check_labels(task, calib.y, calib.source)
    log.info("task: %s", task.describe())
    if task.kind == acc.CLASSIFICATION and calib.y is None and not calib.synthetic:
        calib.y, calib.labels_from = torch.cat(preds), "model predictions"
    return task, note


def _check_criterion_labels(crit, task, calib: CalibData) -> None:
    """Criteria that score channels by class labels (per sample) need a classifier or such labels."""
    wants = getattr(crit, "needs_labels", False) or getattr(crit, "needs_grad", False)
    if wants and not calib.synthetic and (calib.y is None or calib.y.dim() != 1):
        raise InputError(f"criterion {crit.name!r} ranks channels by the class label of each sample, and this "
                         f"model's task is {task.describe()}"
                         f"{' with per-pixel labels' if calib.y is not None else ' without labels'}; choose a "
                         "criterion that needs no labels, e.g. --criterion l1 or consumer-mi")


def _module_input(config: CompressConfig) -> LoadedModel:
    """A model passed as an nn.Module: a private copy (the caller's object is never pruned or put in eval mode)."""
    c = config.load
    if c.arch is not None or c.arch_kwargs:
        raise InputError("--arch and --arch-kwargs build a model for a state dict; a model passed as an nn.Module "
                         "needs neither")
    try:
        module = copy.deepcopy(c.model)
    except Exception as e:  # noqa: BLE001 - a module holding something uncopyable (a lock, a file)
        raise InputError(f"the model object cannot be copied ({type(e).__name__}: {str(e)[:100]}); pass its state "
                         "dict with --arch instead") from None
    kind = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "module"
    return LoadedModel(module.eval(), kind, Path(f"<{type(c.model).__name__} object>"), None, {}, None)


def _example_chw(example) -> tuple[int, int, int]:
    if not isinstance(example, torch.Tensor):
        raise InputError(f"example_input must be a torch.Tensor of the input's shape, e.g. torch.randn(1, 3, 32, 32); "
                         f"got {type(example).__name__}")
    s = tuple(int(d) for d in example.shape)
    if len(s) == 4:
        s = s[1:]
    if len(s) != 3 or min(s) < 1:
        raise InputError(f"example_input has shape {tuple(example.shape)}; pass an (N, C, H, W) or (C, H, W) tensor")
    return s  # type: ignore[return-value]


def _check_data_spec(spec, option: str) -> None:
    """A data path that does not exist is found now, not after the model and the search."""
    text = str(spec)
    if ":" in text and not Path(text).exists():
        mod, _, attr = text.partition(":")
        if not mod or not attr:
            raise InputError(f"{option} {text[:80]!r} is neither an existing path nor package.module:callable")
        return
    if not Path(text).exists():
        raise InputError(f"{option} {text[:80]} does not exist; pass an image folder, an .npz/.npy file or "
                         "package.module:callable")
