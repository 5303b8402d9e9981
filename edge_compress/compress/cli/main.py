"""The `compress` command: a thin layer over the Python API (compress/api.py) and the profile registry. Its
options are generated from the configs (cli/options.py); subcommands are argparse subparsers.

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
from typing import ClassVar

from .. import __version__
from ..config import CompressConfig, Config, ValidateConfig, option
from ..errors import EXIT_INPUT_ERROR, EXIT_INTERNAL_ERROR, CompressError
from . import commands
from .options import add_config_options, keywords

# Every subcommand, with the line `compress --help` shows for it; `compress COMMAND --help` has the rest.
COMMANDS = {
    "validate": "measure any ONNX model on a target: against a budget, or a latency report only",
    "report": "re-render report.html from an output folder's report.json",
    "example": "train a small CNN on generated images and compress it to 1.5x its speed for host (measured) and raspberry-pi-4 (predicted)",
    "fit-cost-model": "fit a target's cost-model factors: measured here for host, published latencies otherwise",
    "cost-model": "predicted vs measured latency per layer of one model on a target",
}
# Commands whose own parser (in the module that runs them) reads the rest of the line.
FORWARDED = ("example", "fit-cost-model", "cost-model")

USAGE = """compress --target NAME [budget] [options] model.pt
       compress COMMAND [options]        (compress COMMAND --help)
       compress --list-targets | --list-archs | --list-criteria"""

EXAMPLES = """\
examples:
  compress --target host --arch resnet56 --speedup 1.5 resnet56.th
  compress --target jetson-nano --arch resnet56 --calib calib.npz --latency-ms 2 resnet56.th
  compress --target raspberry-pi-4 --arch mypkg.models:build --calib calib.npz --macs 50% model.pt
  compress validate model.onnx --target host --latency-ms 2.5
  compress example

exit codes: 0 budget met, 1 budget (or --max-accuracy-drop / --min-agreement) missed or unreachable, 2 bad input, 3 internal error (rerun with -v)
"""

VALIDATE = ("Measure any ONNX model on a target, as the pipeline measures its final model, and write the same "
            "report.json / report.html; with a budget, the same verdict and exit codes (0 met, 1 missed), without "
            "one a latency report only (exit 0). No pruning.")

# --help groups in this order (the configs' fields come in their own order within each)
GROUPS = ("target", "model", "calibration data", "budget (default: the target profile's)", "pruning",
          "recovery after pruning (fine-tuning with labels, distillation from the original without)",
          "measuring on a device over SSH", "export", "output")


class ListingOptions(Config):
    """Answers that need no model."""
    list_targets: bool = option(False, "list the built-in device profiles and exit", group="target")
    show_target: str | None = option(None, "print one device profile as JSON and exit", metavar="NAME|FILE.yaml",
                                     group="target")
    list_archs: bool = option(False, "list the built-in architectures and exit", group="model")
    list_criteria: bool = option(False, "list the criteria and their options, and exit", group="pruning")


class ConsoleOptions(Config):
    group: ClassVar[str] = "output"
    as_json: bool = option(False, "print a machine-readable summary on stdout", flag="--json")
    verbose: bool = option(False, "show progress details and full tracebacks", short="-v")
    quiet: bool = option(False, "only errors on stderr", short="-q")


class _Commands(argparse._SubParsersAction):
    """The subcommands; anything else in the first positional place is the main command's model file, and the
    rest of the line is the main command's options."""

    class _AnyName:
        """argparse checks the first positional against the choices before calling the action: any name passes."""
        def __init__(self, names: dict):
            self.names = names

        def __contains__(self, name) -> bool:
            return True

        def __iter__(self):
            return iter(self.names)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.choices = self._AnyName(self._name_parser_map)

    def __call__(self, parser, namespace, values, option_string=None):
        name, rest = values[0], list(values[1:])
        if name not in self._name_parser_map.keys():
            namespace.model = name
            parser.parse_args(rest, namespace)
            return
        namespace.command = name
        if name in FORWARDED:
            namespace.forwarded = rest
            return
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compress", usage=USAGE,
        description="Prune a trained PyTorch CNN to a device's latency/memory budget, export it to ONNX, build the "
                    "engine for the device, and report what was measured or predicted.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.register("action", "commands", _Commands)
    groups = {title: p.add_argument_group(title) for title in GROUPS}
    # The commands come first among the positionals, so that `compress validate ...` is never taken for a model.
    sub = p.add_subparsers(action="commands", dest="command", title="commands", metavar="COMMAND")
    add_config_options(p, CompressConfig, groups)
    add_config_options(p, ListingOptions, groups)
    add_config_options(p, ConsoleOptions, groups)
    p.add_argument("--version", action="version", version=f"compress {__version__}")
    for name, text in COMMANDS.items():
        if name in FORWARDED:
            sub.add_parser(name, prog=f"compress {name}", help=text, add_help=False)
        elif name == "validate":
            _validate_parser(sub.add_parser(name, prog=f"compress {name}", help=text, description=VALIDATE))
        else:
            r = sub.add_parser(name, prog=f"compress {name}", help=text, description="Re-render report.html from an output folder's "
                               "report.json.")
            r.add_argument("dir", help="an output folder holding report.json")
            add_config_options(r, ConsoleOptions)
    return p


def _validate_parser(p: argparse.ArgumentParser) -> None:
    groups = add_config_options(p, ValidateConfig)
    add_config_options(p, ConsoleOptions, groups)
    # --target is required on the command line (the API defaults to host)
    next(a for a in p._actions if a.dest == "target").required = True


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
        args = build_parser().parse_args(argv)
        command = getattr(args, "command", None)
        if command in ("fit-cost-model", "cost-model"):
            from ..costmodel.commands import main as costfit_main
            return costfit_main([command, *args.forwarded])
        if command == "example":
            from ..example import build_parser as example_parser, run as run_example
            args = example_parser().parse_args(args.forwarded)
            _setup_logging(args)
            return _guarded(run_example, args)
        _setup_logging(args)
        run = {"validate": _run_validate, "report": lambda a: commands.rerender(Path(a.dir))}.get(command, _dispatch)
        return _guarded(run, args)
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


def _dispatch(args) -> int:
    from edge_compress.device_profiles import load_profile

    if args.list_targets:
        return commands.list_targets(args.json)
    if args.list_archs:
        return commands.list_archs(args.json)
    if args.show_target:
        print(json.dumps(load_profile(args.show_target).to_dict(), indent=2))
        return 0
    if args.list_criteria:
        return commands.list_criteria()
    if not getattr(args, "model", None):
        raise CompressError("no model file given; usage: compress --target NAME [options] model.pt (see --help)")
    if not args.target:
        raise CompressError("no --target given; pass a built-in name (compress --list-targets) or a profile YAML file")
    # The profile first: a mistyped --target is answered in a fraction of a second, before torch loads.
    load_profile(args.target)
    config = CompressConfig.from_keywords(**keywords(args, CompressConfig), progress=not (args.quiet or args.json))
    from ..api import compress

    result = compress(config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        from ..report.summary import summary_line

        print(summary_line(result.verdict, result.original.to_dict(), result.final.to_dict(),
                           result.budget.to_dict(), result.report))
        print(f"output: {result.out_dir}")
    return result.exit_code


def _run_validate(args) -> int:
    from ..api import validate

    result = validate(ValidateConfig.from_keywords(**keywords(args, ValidateConfig)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        from ..report import units
        from ..report.summary import verdict_label

        m = result.metrics
        budget = result.report["budget"]
        print(f"{verdict_label(result.verdict, m.latency_kind, budget) if budget else 'MEASURED'}: "
              f"latency {units.ms(m.latency_ms)} ({units.latency_kind(m.latency_kind)}), memory {units.mb(m.memory_mb)}, "
              f"params {units.count(m.params)}; budget {units.budget(budget)}")
        print(f"output: {result.out_dir}")
    return result.exit_code


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
    from edge_compress.deploy import DeviceError
    from edge_compress.export import ExportError, ParityError

    if isinstance(e, (ExportError, ProviderError, DeviceError)):
        return EXIT_INPUT_ERROR
    if isinstance(e, (ParityError, DeployError)):
        return EXIT_INTERNAL_ERROR
    return None


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
