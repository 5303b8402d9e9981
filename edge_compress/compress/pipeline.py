"""The pipeline driver: load -> evaluate -> prune to the budget -> re-estimate BN -> export -> engine ->
measure -> report. It only sequences stages; each stage lives in its own module, and `export`/`deploy`
get plain values (paths, shapes, numbers), never objects of this package.
"""
from __future__ import annotations

import copy
import hashlib
import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from edge_compress.deploy import (
    build_ort_engine,
    environment_info,
    trtexec_command,
    write_build_script,
    write_device_bundle,
)
from edge_compress.device_profiles import load_profile
from edge_compress.export import ExportError, check_parity, export_onnx, simplify_onnx, tolerance_for

from . import accuracy as acc
from .report import units
from .bn_recalibration import recalibrate_batchnorm
from .search.budget import Budget, BudgetSpec, Metrics
from .calib import CalibData, load_calibration, synthetic_calibration
from .costmodel.model import factors_from_profile, predict_layer_ms
from .criteria.defaults import DATA_FREE_DEFAULT, resolve_criterion
from .criteria.registry import describe_criterion, make_criterion
from .errors import EXIT_BUDGET_MISSED, EXIT_OK, BudgetError, InputError
from .evaluate import Evaluation, LatencyEvaluator, measured_kind
from .costmodel.host import for_this_machine
from .model_io import LoadedModel, load_model, save_pruned_bytes
from .options import CompressOptions
from .output import OutputDir, check_out_dir, sha256_file
from .pruning.pruner import ChannelPruner
from .pruning.view import GroupView
from .search.removal import prune_to
from .search.rounds import SELECTIONS, SearchSetup, SearchState, full_evaluation, knapsack_search, uniform_search
from .report.build import build_report, layer_table, versions, write_report

log = logging.getLogger("compress")

LATENCY_MARGIN = 0.97  # accept a measured round only 3 % under budget: the final re-measurement is noisy too


@dataclass
class CompressResult:
    verdict: str                  # "met" | "missed"
    exit_code: int
    out_dir: Path
    budget: Budget
    original: Metrics
    final: Metrics
    report: dict = field(repr=False)
    model: nn.Module | None = field(default=None, repr=False)   # the pruned model (also in model.pruned.pt)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "out_dir": str(self.out_dir),
                "budget": self.budget.to_dict(), "original": self.original.to_dict(), "final": self.final.to_dict(),
                "report": str(self.out_dir / "report.json")}


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)


def compress(options: CompressOptions | str | Path | nn.Module, **kwargs) -> CompressResult:
    """Compress one model for one target; the Python form of `compress --target T model.pt`.

    `options` is a CompressOptions, or the model (a file path, or an nn.Module used as it is: pass
    `example_input=` a tensor of the input's shape unless --calib data or `input_shape` gives it) with the
    options as keywords, e.g. `compress(model, example_input=torch.randn(1, 3, 32, 32), target="host")`.
    The caller's module is never modified: it is copied before anything runs.
    """
    if not isinstance(options, CompressOptions):
        options = CompressOptions(model=options, **kwargs)
    elif kwargs:
        raise TypeError("pass either a CompressOptions or keyword options, not both")
    return _Run(options).run()


class _Run:
    def __init__(self, o: CompressOptions):
        self.o = o
        self.timer = _Timer()
        self.notes: list[str] = []

    # -- stages -------------------------------------------------------------------------------------

    def run(self) -> CompressResult:
        o = self.o
        torch.manual_seed(o.seed)
        np.random.seed(o.seed)
        with self.timer.stage("load"):
            profile, note = for_this_machine(load_profile(o.target))
            if note:
                self.notes.append(note)
            self.criterion_name, note = resolve_criterion(o.criterion, o.calib is not None, bool(o.train_data))
            if note:   # why `auto` chose what it did; a warning only when no information could be measured
                self.notes.append(note)
                (log.warning if self.criterion_name == DATA_FREE_DEFAULT else log.info)(note)
            self.criterion = make_criterion(self.criterion_name, o.criterion_options)
            if o.selection not in SELECTIONS:
                raise InputError(f"unknown --selection {o.selection!r}; choose one of {', '.join(SELECTIONS)}")
            if not 0 < o.step < 1:
                raise InputError(f"--step must be between 0 and 1 (a fraction of the channels per round), got {o.step}")
            spec = BudgetSpec.from_options(o.latency_ms, o.speedup, o.memory_mb, o.macs, o.params,
                                           profile.budget.latency_ms, profile.budget.memory_mb)
            # Everything the options and files can tell is checked before the model loads, and long before
            # the search: a bad --epochs or --out must not cost a pruning run.
            self.recovery_options = self._recovery_options()
            self.device = self._device()
            if o.train_data is not None:
                _check_data_spec(o.train_data, "--train-data")
            if o.calib is not None:
                _check_data_spec(o.calib, "--calib")
            in_memory = isinstance(o.model, nn.Module)
            if not in_memory and o.example_input is not None:
                raise InputError("example_input is for a model passed as an nn.Module; a model file's input shape "
                                 "comes from --arch, --input-shape or --calib")
            inputs = [Path(p) for p in (None if in_memory else o.model, o.calib, o.train_data, o.target)
                      if p is not None]
            stem = type(o.model).__name__ if in_memory else Path(o.model).stem
            out = Path(o.out) if o.out else Path("compressed") / f"{stem}-{profile.name}"
            check_out_dir(out, inputs)
            loaded = _module_input(o) if in_memory else load_model(o.model, o.arch, o.arch_kwargs, o.trust_model)
            shape, calib = self._shape_and_calibration(loaded, profile)
        with OutputDir(out, inputs) as od:
            od.attach_log("compress")
            return self._run_in(od, profile, spec, loaded, shape, calib)

    def _recovery_options(self):
        from .recovery import RecoveryOptions

        o = self.o
        try:
            return RecoveryOptions(**{"seed": o.seed, **o.recovery})
        except TypeError as e:
            raise InputError(f"unknown recovery option ({e}); see compress --help, group 'recovery'") from None

    def _run_in(self, od: OutputDir, profile, spec: BudgetSpec, loaded: LoadedModel, shape, calib: CalibData):
        o = self.o
        self.calib = calib
        # The example batch is real data; a batch larger than the calibration set repeats its samples.
        example = calib.x[torch.arange(shape[0]) % len(calib)].clone()
        evaluator = LatencyEvaluator(profile, example, device=self.device)
        try:
            with self.timer.stage("evaluate_original"):
                log.info("%s the original model on %s ...", "measuring" if evaluator.measured else "predicting",
                         profile.name)
                original = evaluator.evaluate(loaded.module, full=True)
            budget = spec.resolve(original.metrics)
            log.info("original: %s; budget: %s", _fmt(original.metrics), units.budget(budget.to_dict()))
            if spec.latency_fraction is not None and evaluator.can_pair and loaded.prunable:
                evaluator.set_reference(loaded.module)
            elif spec.latency_fraction is not None and evaluator.measured:
                self.notes.append("the relative latency budget was judged on separate measurements of the original "
                                  "and the pruned model (timing them interleaved needs a target measured on this "
                                  "machine and a prunable model), so drift between the two runs counts")
            self._check_budget_units(budget, original)
            model = loaded.module
            pruning: dict = {"criterion": self.criterion_name,
                             "criterion_description": describe_criterion(self.criterion_name),
                             "criterion_options": dict(o.criterion_options), "rounds": [], "groups": []}
            if not budget.misses(original.metrics):
                self.notes.append("the original model already meets the budget: nothing was pruned"
                                  + (" (and nothing recovered from --train-data)" if o.train_data else ""))
                log.info("the original model already meets the budget; nothing to prune")
                final_eval = original
            else:
                if not loaded.prunable:
                    raise InputError(f"{loaded.path} is TorchScript, which cannot be pruned structurally and misses the "
                                     f"budget ({'; '.join(budget.misses(original.metrics))}); pass the state dict with --arch")
                with self.timer.stage("prune"):
                    model = copy.deepcopy(loaded.module)
                    with _flat_outputs(model, example):
                        final_eval = self._prune_to_budget(model, example, profile, evaluator, budget, original,
                                                           pruning, spec.latency_fraction)
                details = self.criterion.details()
                if details:  # what drove the choices: per-layer scores, CMI curves and cutoffs
                    pruning["criterion_details"] = details
                    od.write_json("scores.json", {"criterion": self.criterion_name, **details})
                if not calib.synthetic:
                    with self.timer.stage("recalibrate_bn"):
                        log.info("re-estimating BatchNorm statistics on %d calibration samples ...", len(calib))
                        n_bn = recalibrate_batchnorm(model, calib.x)
                    pruning["bn_recalibrated_layers"] = n_bn
                else:
                    self.notes.append("BatchNorm statistics were not re-estimated: no calibration data (--calib) given")
                if o.train_data:
                    pruning["recovery"] = self._recover(model, loaded, shape)
            artifacts = self._export_and_deploy(od, model, example, calib, profile, evaluator)
            final_metrics = final_eval.metrics
            if artifacts.get("stats") is not None:  # the engine's own measurement is the number that counts
                st = artifacts["stats"]
                final_metrics = Metrics(st.median_ms, measured_kind(st), final_metrics.memory_mb,
                                        final_metrics.macs, final_metrics.params)
            if artifacts.get("reference_stats") is not None:   # a speedup is judged in the run that timed both
                original, budget = self._rebased(original, artifacts["reference_stats"], spec, budget)
            missed = budget.misses(final_metrics)
            verdict = "missed" if missed else "met"
            if missed:
                self.notes.append("budget missed by the final measurement: " + "; ".join(missed))
            with self.timer.stage("save"):
                self._save_model(od, model, loaded)
                accuracy = self._accuracy(loaded.module, model, calib)
            report = self._report(od, profile, spec, budget, loaded, calib, original, final_eval, final_metrics,
                                  artifacts, pruning, accuracy, verdict, shape)
            log.debug("%s: %s -> %s (%s)", verdict.upper(), _fmt(original.metrics), _fmt(final_metrics), od.final)
            write_report(od, report)
            out_dir = od.commit()
            return CompressResult(verdict, EXIT_OK if verdict == "met" else EXIT_BUDGET_MISSED, out_dir, budget,
                                  original.metrics, final_metrics, report, model)
        finally:
            evaluator.close()

    def _rebased(self, original: Evaluation, ref, spec: BudgetSpec, budget: Budget) -> tuple[Evaluation, Budget]:
        """The original as timed interleaved with the final model, and the relative latency budget resolved from it."""
        first = original.metrics
        metrics = Metrics(ref.median_ms, measured_kind(ref), first.memory_mb, first.macs, first.params)
        rebased = spec.resolve(metrics)
        asked = f"--speedup {spec.speedup:g}" if spec.speedup else f"--latency-ms {100 * spec.latency_fraction:g}%"
        note = (f"{asked} was judged in one run that timed the original and the final model "
                f"interleaved: original {ref.median_ms:.4g} ms there (first measured alone at "
                f"{first.latency_ms:.4g} ms; the budget was {budget.latency_ms:.4g} ms from that, "
                f"{rebased.latency_ms:.4g} ms from this)")
        self.notes.append(note)
        log.info(note)
        return Evaluation(metrics, ref, original.layers), rebased

    def _device(self):
        """An SshConnection for --device user@host[:port], or None (the profile may name its own device)."""
        o = self.o
        if not o.device:
            return None
        from edge_compress.deploy import SshConnection
        return SshConnection.from_address(o.device, identity_file=o.ssh_key, known_hosts=o.known_hosts,
                                          remote_python=o.device_python or "python3")

    def _shape_and_calibration(self, loaded: LoadedModel, profile) -> tuple[tuple[int, int, int, int], CalibData]:
        """The input shape (from --input-shape, else the built-in architecture, else the calibration data; the
        batch from the profile) and the calibration data in that shape."""
        o, info = self.o, loaded.arch_info
        batch = profile.measurement.batch_size
        chw: tuple[int, ...] | None = None
        if o.input_shape:
            s = tuple(int(v) for v in o.input_shape)
            if len(s) == 3:
                s = (batch, *s)
            if len(s) != 4 or min(s) < 1:
                raise InputError(f"--input-shape {'x'.join(map(str, o.input_shape))} must be NxCxHxW with positive "
                                 "sizes, e.g. 1x3x32x32")
            batch, chw = s[0], s[1:]
        elif info is not None:
            chw = info.input_shape
        elif o.example_input is not None:
            chw = _example_chw(o.example_input)
        elif o.calib is None:
            raise InputError("the input shape is unknown for this model: pass --input-shape NxCxHxW (e.g. "
                             "1x3x224x224) or --calib data of that shape"
                             + (" (or example_input=, a tensor of that shape)" if loaded.kind == "module" else ""))
        mean = o.mean or (info.mean if info else None)
        std = o.std or (info.std if info else None)
        if o.calib is None:
            log.warning("no --calib given: using synthetic inputs for verification only; give real data for "
                        "BatchNorm re-estimation and meaningful parity and accuracy numbers")
            calib = synthetic_calibration(tuple(chw), min(o.calib_samples, 64), o.seed)
        else:
            calib = load_calibration(o.calib, tuple(chw) if chw else None, o.calib_samples, mean, std, o.seed)
            if chw is None:
                log.info("input shape %s taken from the calibration data (batch %d from the profile)",
                         "x".join(map(str, calib.input_shape)), batch)
            if "only" in calib.normalisation:
                self.notes.append(f"calibration data normalisation: {calib.normalisation}")
                log.warning("calibration data: %s", calib.normalisation)
        shape = (batch, *calib.input_shape)
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
        self.task = task
        note = acc.check_labels(task, calib.y, calib.source)
        if note:
            self.notes.append(note)
        log.info("task: %s", task.describe())
        if task.kind == acc.CLASSIFICATION and calib.y is None and not calib.synthetic:
            calib.y, calib.labels_from = torch.cat(preds), "model predictions"
        self._check_criterion_labels(task, calib)
        return shape, calib  # type: ignore[return-value]

    def _check_criterion_labels(self, task, calib: CalibData) -> None:
        """Criteria that score channels by class labels (per sample) need a classifier or such labels."""
        crit = self.criterion
        wants = getattr(crit, "needs_labels", False) or getattr(crit, "needs_grad", False)
        if wants and not calib.synthetic and (calib.y is None or calib.y.dim() != 1):
            raise InputError(f"criterion {crit.name!r} ranks channels by the class label of each sample, and this "
                             f"model's task is {task.describe()}"
                             f"{' with per-pixel labels' if calib.y is not None else ' without labels'}; choose a "
                             "criterion that needs no labels, e.g. --criterion l1 or consumer-mi")

    def _check_budget_units(self, budget: Budget, original: Evaluation) -> None:
        if budget.macs is not None and original.metrics.macs is None:
            raise InputError("--macs needs a model whose layers can be counted (a state dict with --arch, not TorchScript)")

    def _prune_to_budget(self, model, example, profile, evaluator: LatencyEvaluator, budget: Budget,
                         original: Evaluation, pruning: dict, latency_fraction: float | None) -> Evaluation:
        o = self.o
        pruner = ChannelPruner(model, example, profile.pruning.channel_multiple, profile.pruning.min_channels)
        pruning["groups"] = [g.to_dict() for g in pruner.groups.values()]
        if not pruner.prunable_groups:
            raise BudgetError(f"no layer of this model can be pruned safely, and the original misses the budget "
                              f"({'; '.join(budget.misses(original.metrics))}); best reachable: {_fmt(original.metrics)}")
        skipped = [g for g in pruner.groups.values() if not g.prunable]
        for g in skipped:
            log.info("left unpruned: %s (%s)", g.root, g.reason)
        margin = LATENCY_MARGIN if evaluator.measured else 1.0
        # The most that can be pruned: if even that misses, say so now instead of after every round.
        floor_model = copy.deepcopy(model)
        # Which channels survive does not change the floor's shapes: any criterion will do, and L1 needs no data.
        floor_pruner = pruner.for_copy(floor_model)
        prune_to(floor_pruner, make_criterion("l1"), 0.0)
        if o.selection == "knapsack":   # the knapsack can also remove whole residual blocks at their minimum
            floor_pruner.without_blocks(list(floor_pruner.depth_blocks()))
        floor_eval, floor_budget = full_evaluation(evaluator, floor_model, budget, latency_fraction)
        if floor_budget.misses(floor_eval.metrics, margin):
            misses = "; ".join(floor_budget.misses(floor_eval.metrics, margin))
            raise BudgetError(f"budget unreachable: even with every prunable layer at the minimum of "
                              f"{profile.pruning.min_channels} channels"
                              f"{' and every removable residual block removed' if o.selection == 'knapsack' else ''}"
                              f" the model misses it ({misses}); best reachable: "
                              f"{_fmt(floor_eval.metrics)}; relax the budget", best=floor_eval.metrics.to_dict())
        def prepare(view: GroupView) -> None:
            with self.timer.stage("score"):
                self._prepare_criterion(view, self.calib)

        def after_round() -> None:
            if not self.calib.synthetic:   # every comparison after a round sees re-estimated statistics
                with self.timer.stage("recalibrate_bn"):
                    recalibrate_batchnorm(model, self.calib.x)

        progress = _progress(None if o.selection == "knapsack" else int(np.ceil(1.0 / o.step)), o.progress)
        setup = SearchSetup(self.criterion, evaluator, margin, prepare, after_round, progress, pruning["rounds"],
                            latency_fraction=latency_fraction if evaluator.reference_onnx is not None else None)
        start = SearchState(pruner, budget, original)
        try:
            final = knapsack_search(setup, start) if o.selection == "knapsack" else uniform_search(setup, start, o.step)
        finally:
            progress.close()
        pruning["selection"] = o.selection
        pruning["groups_after"] = [g.to_dict() for g in final.pruner.groups.values()]
        pruning["blocks_removed"] = list(getattr(final.pruner, "removed_blocks", []))
        return final.evaluation

    def _recover(self, model, loaded: LoadedModel, shape) -> dict:
        from .recovery import load_training_data, recover

        o, info = self.o, loaded.arch_info
        options = self.recovery_options
        train = load_training_data(o.train_data, tuple(shape[1:]), o.mean or (info.mean if info else None),
                                   o.std or (info.std if info else None), o.train_samples, o.seed)
        with self.timer.stage("recover"):
            result = recover(model, loaded.module, train, options, progress=o.progress, log=log.info)
        return result.to_dict()

    def _prepare_criterion(self, view: GroupView, calib: CalibData) -> None:
        crit = self.criterion
        if crit.needs_data and calib.synthetic:
            raise InputError(f"criterion {crit.name!r} scores channels from data and needs calibration data; "
                             "pass --calib (images, .npz/.npy) or choose a data-free criterion such as l1")
        bar = None

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, desc=f"scoring ({stage})", leave=False, disable=None if self.o.progress else True)
            bar.n = done
            bar.refresh()

        crit.progress = progress
        # class labels per sample only: per-pixel labels are for the accuracy (see _check_criterion_labels)
        y = calib.y if calib.y is not None and calib.y.dim() == 1 else None
        try:
            crit.prepare(view, None if calib.synthetic else calib.x, None if calib.synthetic else y)
        finally:
            if bar is not None:
                bar.close()

    def _export_and_deploy(self, od: OutputDir, model, example, calib: CalibData, profile, evaluator: LatencyEvaluator) -> dict:
        rt = profile.runtime
        out: dict = {}
        with self.timer.stage("export"):
            log.info("exporting to ONNX (opset %d), simplifying and checking parity ...", rt.opset)
            raw = od.path("logs/model.raw.onnx")
            if self.o.dynamic_batch:   # batch >= 2 at export, so no size-1 shape is specialised into the graph
                wide = example.repeat(max(1, -(-2 // example.shape[0])), 1, 1, 1) if example.shape[0] < 2 else example
                exported = export_onnx(model, wide, raw, opset=rt.opset, dynamic_batch=True)
            else:
                exported = export_onnx(model, example, raw, opset=rt.opset)
            simplified = simplify_onnx(raw, od.path("model.onnx"), check_n=3)
            if not simplified.simplified:
                self.notes.append(f"onnx-simplifier failed, the unsimplified model was kept: {simplified.reason}")
            atol, rtol = tolerance_for("fp32")
            parity_inputs = calib.x[: max(example.shape[0], min(len(calib), 64))]
            parity = check_parity(od.path("model.onnx"), model, parity_inputs, atol=atol, rtol=rtol,
                                  batch_size=example.shape[0])
            parity.raise_if_failed()
            raw.unlink()
        # the raw export was simplified into model.onnx and deleted: its hash stays, its path does not
        raw_record = {k: v for k, v in exported.to_dict().items() if k != "path"}
        out["export"] = {"onnx": {**raw_record, "raw_export": "deleted after simplification"},
                         "simplify": simplified.to_dict(), "parity": parity.to_dict()}
        with self.timer.stage("engine"):
            if rt.engine == "onnxruntime" and evaluator.measured and evaluator.device is None:
                source = od.path("model.onnx")
                if rt.precision == "int8":
                    source = self._quantize(od, calib, example, out)
                engine = build_ort_engine(source, od.path("model.ort.onnx"),
                                          providers=rt.execution_providers, threads=profile.measurement.threads)
                out["engine"] = {"kind": "onnxruntime", "precision": rt.precision, **engine.to_dict()}
            elif rt.engine == "tensorrt":
                shapes = {"input": tuple(example.shape)} if self.o.dynamic_batch else None
                argv = trtexec_command("model.onnx", "model.engine", trt_version=rt.version, precision=rt.precision,
                                       workspace_mb=rt.workspace_mb, shapes=shapes,
                                       trtexec_path=rt.trtexec_path or "trtexec")
                write_build_script(od.path("build_engine.sh"), argv,
                                   f"{profile.description}: build a TensorRT {rt.precision.upper()} engine")
                bundle = write_device_bundle(od.tmp, "model.onnx", tuple(example.shape), self.o.seed,
                                             "build_engine.sh", profile.description)
                out["engine"] = {"kind": "tensorrt", "built": False, "build_script": "build_engine.sh", "argv": argv,
                                 "why_not_built": "TensorRT engines are specific to the GPU and TensorRT version: "
                                                  "run build_engine.sh on the device"}
                out["engine"]["bundle"] = bundle
            else:
                out["engine"] = {"kind": rt.engine, "built": False,
                                 "why_not_built": f"the engine is built on the device by {rt.engine} from model.onnx"}
        if evaluator.measured:
            with self.timer.stage("measure"):
                log.info("measuring the final model on %s ...", profile.name)
                # a device optimises model.onnx itself; the host's ORT-optimised file is specific to this CPU
                final = od.path("model.onnx") if evaluator.device is not None else od.path("model.ort.onnx")
                if evaluator.reference_onnx is not None:
                    out["stats"], out["reference_stats"] = evaluator.measure_paired(final)
                else:
                    out["stats"] = evaluator.measure_onnx(final, full=True)
            if evaluator.device is not None:
                out["engine"]["measured_on"] = evaluator.device.address
        return out

    def _quantize(self, od: OutputDir, calib: CalibData, example, out: dict) -> Path:
        """Static INT8 (QDQ) for ONNX Runtime, calibrated on the calibration data; the accuracy change is recorded."""
        from edge_compress.deploy import quantize_int8

        if calib.synthetic:
            raise InputError("INT8 quantization needs real calibration data to set its scales; pass --calib")
        n = len(calib)
        calib_part = calib.x[: max(1, n // 2)].numpy()
        check_part = calib.x[n // 2:].numpy() if n > 1 else calib_part
        with self.timer.stage("quantize"):
            q = quantize_int8(od.path("model.onnx"), od.path("model.int8.onnx"), calib_part,
                              check_inputs=check_part, batch_size=example.shape[0])
        out["export"]["quantization"] = q.to_dict()
        self.notes.append(f"INT8 (QDQ) model: max abs output change {q.max_abs_error:.3g} against FP32 on "
                          f"{q.check_samples} held-out calibration samples, top-1 agreement "
                          f"{q.top1_agreement if q.top1_agreement is not None else 'n/a'}; the pruning rounds "
                          "measured the FP32 model, the final latency is the INT8 engine's")
        return od.path("model.int8.onnx")

    def _save_model(self, od: OutputDir, model, loaded: LoadedModel) -> None:
        if loaded.kind == "torchscript" and isinstance(self.o.model, nn.Module):
            torch.jit.save(model, str(od.path("model.pruned.pt")))
            self.notes.append("model.pruned.pt is the unchanged TorchScript module (TorchScript cannot be pruned)")
        elif loaded.kind == "torchscript":
            od.path("model.pruned.pt").write_bytes(Path(loaded.path).read_bytes())
            self.notes.append("model.pruned.pt is the unchanged TorchScript input (TorchScript cannot be pruned)")
        elif loaded.kind == "module":
            buffer = io.BytesIO()
            try:
                torch.save(model, buffer)
            except Exception as e:  # noqa: BLE001 - a class pickle cannot reach (local, lambdas): keep the weights
                buffer = io.BytesIO()
                torch.save(model.state_dict(), buffer)
                self.notes.append(f"model.pruned.pt holds the pruned model's state dict only: the module itself "
                                  f"cannot be pickled ({type(e).__name__}: {str(e)[:100]}); the pruned layer widths "
                                  "are in report.json's layers, and CompressResult.model is the pruned module")
            else:
                self.notes.append("model.pruned.pt is the pruned module, pickled (the model was passed as an "
                                  "nn.Module): reload it with torch.load(path, weights_only=False) where its class "
                                  "can be imported; CompressResult.model is the same module")
            od.path("model.pruned.pt").write_bytes(buffer.getvalue())
        elif loaded.arch is not None:
            od.path("model.pruned.pt").write_bytes(save_pruned_bytes(model, loaded.arch, loaded.arch_kwargs))
        else:
            torch.save(model, od.path("model.pruned.pt"))
            self.notes.append("model.pruned.pt is a pickled full module (the input was one): reload it with "
                              "torch.load(path, weights_only=False) only if you trust it")

    def _accuracy(self, original_model, model, calib: CalibData) -> dict:
        """Accuracy for the model's task (compress/accuracy.py) on the calibration data: against its labels when
        it has its own (and the task uses them), else against the original model."""
        if calib.synthetic:
            return {"evaluated": False, "why": "no calibration data given", "task": self.task.kind}
        labels = calib.y if calib.labels_from == "data" and self.task.kind != acc.OUTPUTS else None
        result = acc.evaluate(original_model, model, calib.x, labels, self.task)
        out = {"evaluated": True, "data": calib.source, "samples": len(calib), "labels_from": calib.labels_from,
               **result}
        if calib.labels_from == "data" and labels is None:
            out["labels_used"] = False
        return out

    def _model_sha256(self, loaded: LoadedModel) -> str:
        """The input file's hash; for a model passed as an object, that of its state dict as torch.save writes it."""
        if not isinstance(self.o.model, nn.Module):
            return sha256_file(loaded.path)
        buffer = io.BytesIO()
        torch.save(loaded.module.state_dict(), buffer)
        return hashlib.sha256(buffer.getvalue()).hexdigest()

    def _report(self, od, profile, spec, budget, loaded, calib, original, final_eval, final_metrics, artifacts,
                pruning, accuracy, verdict, shape) -> dict:
        factors = factors_from_profile(profile)
        shares = None
        if factors.usable and final_eval.layers:
            times = {c.name: predict_layer_ms(c, factors) for c in final_eval.layers}
            total = sum(times.values())
            shares = {k: v / total for k, v in times.items()}
        stats_final = artifacts.get("stats")
        return build_report(
            verdict=verdict,
            inputs={"model": {"path": str(loaded.path), "sha256": self._model_sha256(loaded), "kind": loaded.kind,
                              "arch": loaded.arch, "arch_kwargs": loaded.arch_kwargs},
                    "target": profile.to_dict(), "input_shape": list(shape),
                    "budget_requested": {k: v for k, v in self.o.to_dict().items()
                                         if k in ("latency_ms", "speedup", "memory_mb", "macs", "params") and v is not None}
                    or {"profile_defaults": profile.budget.__dict__},
                    "criterion": self.criterion_name, "seed": self.o.seed, "step": self.o.step,
                    "calibration": {"source": calib.source, "samples": len(calib), "labels_from": calib.labels_from},
                    "options": self.o.to_dict()},
            budget=budget.to_dict(),
            original={**original.metrics.to_dict(), "latency_stats": original.stats.to_dict() if original.stats else None},
            final={**final_metrics.to_dict(), "latency_stats": stats_final.to_dict() if stats_final else None,
                   "memory_kind": "predicted: weights + largest layer input/output activations "
                                  f"({profile.runtime.precision}), runtime overhead not included"},
            pruning=pruning,
            layers=layer_table(original.layers, final_eval.layers, shares),
            export=artifacts["export"],
            engine=artifacts["engine"],
            accuracy=accuracy,
            timings_s=self.timer.seconds,
            environment={"versions": versions(), **environment_info()},
            artifacts=od.artifacts(),
            notes=self.notes,
            relative_to=od.tmp,   # the temp folder is renamed: paths in the report are relative to it
        )


def _module_input(o: CompressOptions) -> LoadedModel:
    """A model passed as an nn.Module: a private copy (the caller's object is never pruned or put in eval mode)."""
    if o.arch is not None or o.arch_kwargs:
        raise InputError("--arch and --arch-kwargs build a model for a state dict; a model passed as an nn.Module "
                         "needs neither")
    try:
        module = copy.deepcopy(o.model)
    except Exception as e:  # noqa: BLE001 - a module holding something uncopyable (a lock, a file)
        raise InputError(f"the model object cannot be copied ({type(e).__name__}: {str(e)[:100]}); pass its state "
                         "dict with --arch instead") from None
    kind = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "module"
    return LoadedModel(module.eval(), kind, Path(f"<{type(o.model).__name__} object>"), None, {}, None)


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


@contextmanager
def _flat_outputs(model: nn.Module, example: torch.Tensor):
    """The pruner (compress/pruning.py) reads a tensor or a flat tuple/list of tensors; a model that returns a dict
    or nested structures is pruned through a view that returns its tensors as a flat tuple (in the ONNX output
    order), and gets its own forward back afterwards. Module names, and so every report row, stay the same."""
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and
                                         all(isinstance(t, torch.Tensor) for t in out)):
        yield
        return
    cls = type(model)

    def forward(self, *args, **kwargs):
        return tuple(_leaves(cls.forward(self, *args, **kwargs)))

    model.__class__ = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                  "__qualname__": cls.__qualname__})
    try:
        yield
    finally:
        model.__class__ = cls


def _leaves(obj):
    """The tensors of an output structure in export.flatten_outputs' order; anything else is a leaf too, so that
    tracers (torch.fx proxies) pass through."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    else:
        yield obj


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


def _fmt(m: Metrics) -> str:
    macs = f"{units.count(m.macs)} MACs, " if m.macs is not None else ""
    return (f"{units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), {macs}{units.count(m.params)} params, "
            f"{units.mb(m.memory_mb)}")


def _progress(total: int | None, enabled: bool):
    """Uniform selection: its rounds are counted. Knapsack: a share of the way to the budget (total None)."""
    from tqdm.auto import tqdm
    if total is None:
        return tqdm(total=100, desc="pruning", bar_format="{desc}: {n}% of the way to the budget |{bar}| "
                    "{elapsed}{postfix}", disable=None if enabled else True, leave=False)
    return tqdm(total=total, desc="pruning rounds", unit="round", disable=None if enabled else True, leave=False)
