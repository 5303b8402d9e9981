"""The `compress` command: a thin layer over `compress.compress()` and the profile registry.

Exit codes: 0 budget met, 1 budget missed or unreachable, 2 bad input, 3 internal error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

from . import __version__
from .errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, CompressError, InputError

# Every subcommand, with the line `compress --help` shows for it; `compress COMMAND --help` has the rest.
COMMANDS = {
    "validate": "measure any ONNX model on a target: against a budget, or a latency report only",
    "report": "re-render report.html from an output folder's report.json",
    "example": "train a small CNN on generated images and compress it to 1.5x its speed for host (measured) and raspberry-pi-4 (predicted)",
    "fit-cost-model": "fit a target's cost-model factors: measured here for host, published latencies otherwise",
    "cost-model": "predicted vs measured latency per layer of one model on a target",
}

USAGE = """compress --target NAME [budget] [options] model.pt
       compress COMMAND [options]        (compress COMMAND --help)
       compress --list-targets | --list-archs | --list-criteria"""


def _epilog() -> str:
    width = max(map(len, COMMANDS))
    commands = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return f"""\
commands:
{commands}

examples:
  compress --target host --arch resnet56 --speedup 1.5 resnet56.th
  compress --target jetson-nano --arch resnet56 --calib calib.npz --latency-ms 2 resnet56.th
  compress --target raspberry-pi-4 --arch mypkg.models:build --calib calib.npz --macs 50% model.pt
  compress validate model.onnx --target host --latency-ms 2.5
  compress example

exit codes: 0 budget met, 1 budget missed or unreachable, 2 bad input, 3 internal error (rerun with -v)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compress", usage=USAGE,
        description="Prune a trained PyTorch CNN to a device's latency/memory budget, export it to ONNX, build the "
                    "engine for the device, and report what was measured or predicted.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model file: a state dict / checkpoint (with --arch), a pruned model "
                   "written by compress, TorchScript (measure/export only) or a pickled module (with --trust-model)")
    g = p.add_argument_group("target")
    g.add_argument("--target", default=None, metavar="NAME|FILE.yaml",
                   help="device profile: a built-in name (see --list-targets) or your own YAML file")
    g.add_argument("--list-targets", action="store_true", help="list the built-in device profiles and exit")
    g.add_argument("--show-target", metavar="NAME|FILE.yaml", help="print one device profile as JSON and exit")
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="architecture for a state dict: a built-in name (see --list-archs) or "
                   "package.module:callable")
    g.add_argument("--list-archs", action="store_true", help="list the built-in architectures and exit")
    g.add_argument("--arch-kwargs", default="{}", metavar="JSON", help="keyword arguments for --arch, as JSON")
    g.add_argument("--trust-model", action="store_true",
                   help="allow loading a pickled full module (unpickling runs code from the file)")
    g.add_argument("--input-shape", metavar="NxCxHxW", help="input shape, e.g. 1x3x224x224 (default: from the "
                   "built-in architecture, else from --calib; batch from the profile)")
    g = p.add_argument_group("calibration data")
    g.add_argument("--calib", metavar="PATH|module:callable",
                   help="image folder (one sub-folder per class), .npz/.npy (x, optional y) or module:callable")
    g.add_argument("--calib-samples", type=int, default=256, metavar="N", help="samples to use (default 256)")
    g.add_argument("--mean", metavar="M,M,M", help="per-channel mean for image folders (default: the architecture's)")
    g.add_argument("--std", metavar="S,S,S", help="per-channel std for image folders (default: the architecture's)")
    g = p.add_argument_group("budget (default: the target profile's)")
    g.add_argument("--latency-ms", metavar="MS", help="latency at the profile's batch size, ms (or 50%% of the original)")
    g.add_argument("--speedup", type=float, metavar="X", help="latency budget as original latency / X")
    g.add_argument("--memory-mb", metavar="MB", help="predicted memory: weights + the largest layer's input and "
                   "output activations, MB (or a fraction like 50%%)")
    g.add_argument("--macs", metavar="N", help="multiply-accumulates, e.g. 40M, or 50%% of the original")
    g.add_argument("--params", metavar="N", help="parameters, e.g. 0.4M, or 0.5x of the original")
    g = p.add_argument_group("pruning")
    g.add_argument("--criterion", default="auto",
                   help="channel importance criterion; see --list-criteria. Default auto, with --calib: "
                        "consumer-mi (most accurate one-shot), or capacity-independence weighted by L1 when "
                        "--train-data follows (most accurate after training); l1 without --calib (BENCHMARKS.md)")
    g.add_argument("--criterion-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the criterion, repeatable (e.g. alpha=1.01, cutoff=scree); "
                        "see --list-criteria for each criterion's options")
    g.add_argument("--list-criteria", action="store_true", help="list the criteria and their options, and exit")
    g.add_argument("--selection", choices=("knapsack", "uniform"), default="knapsack",
                   help="knapsack: remove the least important channels per unit of the binding resource, priced by "
                        "the target's cost model and corrected by each measurement (default); uniform: the same "
                        "share of every layer per round")
    g.add_argument("--step", type=float, default=0.05,
                   help="uniform selection: fraction of the original channels removed per round")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("recovery after pruning (fine-tuning with labels, distillation from the original without)")
    g.add_argument("--train-data", metavar="PATH", help="training data, same formats as --calib; enables recovery")
    g.add_argument("--train-samples", type=int, metavar="N", help="samples of --train-data to use (default all)")
    g.add_argument("--epochs", type=float, help="epochs (default 1; fractions allowed)")
    g.add_argument("--lr", type=float, help="learning rate (default 0.01, SGD with cosine decay)")
    g.add_argument("--train-batch-size", type=int, help="batch size per process (default 64)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 1e-4)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--kd-temperature", type=float, help="distillation temperature (default 4)")
    g.add_argument("--kd-alpha", type=float, help="with labels: weight of distillation against cross-entropy (default 0)")
    g.add_argument("--recovery-mode", choices=("auto", "finetune", "distill"),
                   help="auto (default): fine-tune when the data has labels, distil from the original otherwise")
    g.add_argument("--train-device", choices=("auto", "cpu", "cuda"), help="default auto: a GPU when present")
    g.add_argument("--train-workers", type=int, help="data loader workers (default 0)")
    g.add_argument("--max-steps", type=int, help="stop after this many steps")
    g = p.add_argument_group("measuring on a device over SSH")
    g.add_argument("--device", metavar="USER@HOST[:PORT]",
                   help="measure latency on this device over SSH (host-key checking on; the key must be in "
                        "known_hosts) instead of the profile's own method")
    g.add_argument("--ssh-key", metavar="FILE", help="private key for --device")
    g.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to trust for --device (default: ssh's)")
    g.add_argument("--device-python", metavar="PATH", help="Python on the device with onnxruntime and numpy "
                   "(default python3)")
    g = p.add_argument_group("export")
    g.add_argument("--dynamic-batch", action="store_true",
                   help="export the ONNX model with a dynamic batch dimension (exported at batch 2 so no size 1 "
                        "is baked in; TensorRT builds it for the profile's batch size)")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output folder (default ./compressed/<model>-<target>)")
    g.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    g.add_argument("-v", "--verbose", action="store_true", help="show progress details and full tracebacks")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    p.add_argument("--version", action="version", version=f"compress {__version__}")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (CI systems, `timeout`, service managers): unwinds like Ctrl-C, so no output is half-written."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        if argv[:1] and argv[0] in COMMANDS:
            return _command(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        _setup_logging(args)
        return _guarded(_dispatch, args)
    except BrokenPipeError:
        # `compress --list-criteria | head -1`: the reader left; say nothing more and exit as a shell would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Terminated:
        _error("terminated (SIGTERM); no output was written", False)
        return 143
    except KeyboardInterrupt:
        _error("interrupted; no output was written", False)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug before the run started (argument handling)
        return _internal(e, verbose)


def _command(name: str, argv: list[str]) -> int:
    if name in ("fit-cost-model", "cost-model"):
        from .costfit import main as costfit_main
        return costfit_main([name, *argv])
    if name == "example":
        from .example import build_parser as example_parser, run as run_example
        args = example_parser().parse_args(argv)
        _setup_logging(args)
        return _guarded(run_example, args)
    args = _subcommand_parser(name).parse_args(argv)
    _setup_logging(args)
    return _guarded(_run_validate if name == "validate" else (lambda a: _rerender(Path(a.dir))), args)


def _guarded(run, args) -> int:
    """Run one command, mapping errors to exit codes: ours (CompressError) and the stage packages' own."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm(loggers=[logging.getLogger("compress")]):   # log lines above the bars
            return run(args)
    except CompressError as e:
        _error(str(e), args.verbose)
        return e.exit_code
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as e:  # noqa: BLE001 - errors of the stage packages, mapped to exit codes below
        code = _stage_error_code(e)
        if code is None:
            return _internal(e, args.verbose)
        _error(str(e), args.verbose)
        return code


def _subcommand_parser(name: str) -> argparse.ArgumentParser:
    """`compress validate model.onnx ...` and `compress report DIR`, with the main command's exit codes."""
    if name == "validate":
        p = argparse.ArgumentParser(prog="compress validate", description="Measure any ONNX model on a target, "
                                    "as the pipeline measures its final model, and write the same report.json / "
                                    "report.html; with a budget, the same verdict and exit codes (0 met, 1 missed), "
                                    "without one a latency report only (exit 0). No pruning.")
        p.add_argument("model", help="ONNX model")
        p.add_argument("--target", required=True, help="built-in name or profile YAML; must be measurable "
                       "(host, or --device)")
        g = p.add_argument_group("budget (optional: without one, the model is measured and reported)")
        g.add_argument("--latency-ms", help="latency budget, ms (absolute)")
        g.add_argument("--memory-mb", help="memory budget, MB (absolute): weights + the largest layer's input and "
                       "output activations, as in compress")
        g.add_argument("--params", help="parameter budget, e.g. 0.4M")
        p.add_argument("--input-shape", metavar="NxCxHxW", help="for models with dynamic input dimensions")
        g = p.add_argument_group("measuring on a device over SSH")
        g.add_argument("--device", metavar="USER@HOST[:PORT]", help="measure there over SSH")
        g.add_argument("--ssh-key", metavar="FILE", help="private key for --device")
        g.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to trust for --device")
        g.add_argument("--device-python", metavar="PATH", help="Python on the device (default python3)")
        p.add_argument("--out", help="output folder (default ./validated/<model>-<target>)")
        p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    else:
        p = argparse.ArgumentParser(prog="compress report", description="Re-render report.html from an output "
                                    "folder's report.json.")
        p.add_argument("dir", help="an output folder holding report.json")
        p.add_argument("--json", action="store_true", help="print the path written as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    return p


def _run_validate(args) -> int:
    from .validate import validate

    device = None
    if args.device:
        from edge_compress.deploy.ssh_runner import SshRunner
        device = SshRunner(args.device, identity_file=args.ssh_key, known_hosts=args.known_hosts,
                           remote_python=args.device_python or "python3")
    result = validate(args.model, args.target, args.latency_ms, args.memory_mb, args.params,
                      _shape(args.input_shape), args.out, device)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        from . import units
        from .summary import verdict_label

        m = result.metrics
        budget = result.report["budget"]
        print(f"{verdict_label(result.verdict, m.latency_kind, budget) if budget else 'MEASURED'}: "
              f"latency {units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), memory {units.mb(m.memory_mb)}, "
              f"params {units.count(m.params)}; budget {units.budget(budget)}")
        print(f"output: {result.out_dir}")
    return result.exit_code


def _rerender(folder: Path) -> int:
    from .report_schema import schema_errors

    path = folder / "report.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; pass an output folder written by compress")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise InputError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, more than any report compress writes; "
                         "pass an output folder written by compress")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); it was not written by compress "
                         "or was edited") from None
    except (RecursionError, UnicodeDecodeError) as e:
        raise InputError(f"{path} cannot be read as a report ({type(e).__name__}); it was not written by compress "
                         "or was edited") from None
    errors = schema_errors(report) if isinstance(report, dict) else ["$: not a JSON object"]
    if errors:
        raise InputError(f"{path} does not match the report schema ({errors[0][:160]}); it was not written by "
                         "compress or was edited")
    from .output import is_compress_output
    if not is_compress_output(folder):   # report.html is rewritten only in a folder compress wrote
        raise InputError(f"{folder} is not a folder compress wrote (no manifest.json listing its files); pass an "
                         "output folder of compress or compress validate")
    from .report_html import render_html
    from edge_compress.deploy.atomic import atomic_write_text
    atomic_write_text(folder / "report.html", render_html(report))
    print(folder / "report.html")
    return 0


MAX_REPORT_BYTES = 64 * 2**20


def _stage_error_code(e: BaseException) -> int | None:
    """Exit code for the errors `device_profiles`, `export` and `deploy` raise; None for anything else.

    A bad profile, an op the exporter cannot handle and a provider the profile requires but this machine
    lacks are the user's to fix (input errors); a failed parity check or engine build is not.
    """
    from edge_compress.device_profiles import ProfileError

    if isinstance(e, ProfileError):
        return EXIT_INPUT_ERROR
    # An error of `export` or `deploy` means they are imported already; a profile error must not pay for them.
    if "edge_compress.deploy" not in sys.modules and "edge_compress.export" not in sys.modules:
        return None
    from edge_compress.deploy import DeployError, ProviderError
    from edge_compress.deploy.errors import DeviceError
    from edge_compress.export import ExportError, ParityError

    if isinstance(e, (ExportError, ProviderError, DeviceError)):
        return EXIT_INPUT_ERROR
    if isinstance(e, (ParityError, DeployError)):
        return EXIT_INTERNAL_ERROR
    return None


def _dispatch(args) -> int:
    from edge_compress.device_profiles import list_profiles, load_profile

    if args.list_targets:
        return _list_targets(args.json)
    if args.list_archs:
        return _list_archs(args.json)
    if args.show_target:
        print(json.dumps(load_profile(args.show_target).to_dict(), indent=2))
        return 0
    if args.list_criteria:
        from .criteria import DATA_FREE_DEFAULT, DEFAULT_CRITERION, ONE_SHOT_DEFAULT, criterion_names, describe_criterion
        from .info_criteria import criterion_option_defaults
        print(f"{'auto':22} the default: with --calib, {ONE_SHOT_DEFAULT}, or {DEFAULT_CRITERION} when --train-data "
              f"is given too; {DATA_FREE_DEFAULT} without --calib")
        for name in criterion_names():
            print(f"{name:22} {describe_criterion(name)}")
            opts = criterion_option_defaults(name)
            if opts:
                print(" " * 23 + "options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
        return 0
    if not args.model:
        raise CompressError("no model file given; usage: compress --target NAME [options] model.pt (see --help)")
    if not args.target:
        raise CompressError("no --target given; pass a built-in name (compress --list-targets) or a profile YAML file")
    # The profile first: a mistyped --target is answered in a fraction of a second, before torch loads.
    from edge_compress.device_profiles import load_profile

    load_profile(args.target)
    from .options import CompressOptions
    from .pipeline import compress

    options = CompressOptions(
        model=args.model, target=args.target, arch=args.arch, arch_kwargs=_json_dict(args.arch_kwargs),
        trust_model=args.trust_model, calib=args.calib, calib_samples=args.calib_samples,
        input_shape=_shape(args.input_shape), mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"),
        latency_ms=args.latency_ms, speedup=args.speedup, memory_mb=args.memory_mb, macs=args.macs,
        params=args.params, criterion=args.criterion, criterion_options=_key_values(args.criterion_option),
        selection=args.selection, step=args.step, dynamic_batch=args.dynamic_batch, device=args.device,
        ssh_key=args.ssh_key, known_hosts=args.known_hosts, device_python=args.device_python, train_data=args.train_data, train_samples=args.train_samples,
        recovery=_recovery_options(args), out=args.out, seed=args.seed,
        progress=not (args.quiet or args.json))
    result = compress(options)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        from .summary import summary_line

        print(summary_line(result.verdict, result.original.to_dict(), result.final.to_dict(),
                           result.budget.to_dict(), result.report))
        print(f"output: {result.out_dir}")
    return result.exit_code


def _list_targets(as_json: bool) -> int:
    from edge_compress.device_profiles import list_profiles

    from .host_fit import fitted_here

    rows = []
    for p in list_profiles():
        cm = p.cost_model
        measured = p.measurement.method != "none"
        here = fitted_here(p)
        rows.append({"name": p.name, "engine": p.runtime.engine, "precision": p.runtime.precision,
                     "latency": "measured" if measured else "predicted",
                     "measured_how": {"local": "here, ONNX Runtime", "ssh": "on the device over SSH"}.get(
                         p.measurement.method, "not measurable from here"),
                     "cost_model": ("not fitted" if not cm.fitted else "fitted" if here is not False
                                    else "fitted elsewhere"), "cost_model_source": cm.source,
                     "description": p.description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'target':18} {'engine':12} {'prec.':5} {'latency':9} {'cost model':16} description")
    for r in rows:
        print(f"{r['name']:18} {r['engine']:12} {r['precision']:5} {r['latency']:9} {r['cost_model']:16} "
              f"{r['description']}")
    print("\nlatency: measured here (host) or predicted by the target's cost model (fitted to published or "
          "measured latencies, or not fitted);\n'fitted elsewhere': fitted on another CPU, re-measured at each run "
          "(compress fit-cost-model --target host fits it here). `compress --show-target NAME`: every number and "
          "its source")
    return 0


def _list_archs(as_json: bool) -> int:
    from .archs import arch_names, get_arch

    rows = [{"name": n, "input_shape": list(get_arch(n).input_shape), "num_classes": get_arch(n).num_classes,
             "description": get_arch(n).description} for n in arch_names()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['name']:18} {'x'.join(map(str, r['input_shape'])):11} {r['num_classes']:>5} classes  "
              f"{r['description']}")
    print("\nor your own: --arch package.module:callable [--arch-kwargs JSON]")
    return 0


def _recovery_options(args) -> dict:
    names = {"epochs": "epochs", "lr": "lr", "train_batch_size": "batch_size", "weight_decay": "weight_decay",
             "momentum": "momentum", "kd_temperature": "temperature", "kd_alpha": "alpha",
             "recovery_mode": "mode", "train_device": "device", "train_workers": "num_workers", "max_steps": "max_steps"}
    return {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}


def _key_values(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CompressError(f"--criterion-option {item!r} is not KEY=VALUE, e.g. --criterion-option alpha=1.01")
        out[key.strip()] = value.strip()
    return out


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompressError(f"--arch-kwargs is not valid JSON ({e.msg}); pass e.g. '{{\"num_classes\": 100}}'") from None
    if not isinstance(value, dict):
        raise CompressError("--arch-kwargs must be a JSON object, e.g. '{\"num_classes\": 100}'")
    return value


def _shape(text: str | None):
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x"))
    except ValueError:
        raise CompressError(f"--input-shape {text!r} is not NxCxHxW, e.g. 1x3x32x32") from None


def _floats(text: str | None, option: str):
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CompressError(f"{option} {text!r} is not a comma-separated list of numbers, e.g. 0.5,0.5,0.5") from None


def _setup_logging(args) -> None:
    level = logging.WARNING if (args.quiet or args.json) else (logging.DEBUG if args.verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[compress] %(message)s"))
    handler.setLevel(level)
    # A filter, not only a level: tqdm's redirect copies a handler's filters but not its level.
    handler.addFilter(lambda record: record.levelno >= level)
    logger = logging.getLogger("compress")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if not args.verbose:
        # The exporters' own chatter (constant folding notes, deprecations) says nothing a user can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")


def _error(message: str, verbose: bool) -> None:
    print(f"compress: error: {message}", file=sys.stderr)
    if verbose:
        traceback.print_exc()


def _internal(e: BaseException, verbose: bool) -> int:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"compress: internal error: {type(e).__name__}: {first[:300]} (rerun with -v for the traceback)", file=sys.stderr)
    if verbose:
        traceback.print_exc()
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
