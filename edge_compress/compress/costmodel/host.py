"""A measured target's cost model on the machine at hand.

The `host` profile's factors were fitted on one CPU (cost_model.fit.machine). On another CPU they describe
that other machine: on an Intel Xeon the measured latency was 3.3x the prediction in every round while
the report still quoted the fit's 0.87 % error. So before the factors are used, the CPU is compared with
the fit's; where it differs:

- with a latency budget to price (`fitted_for_this_machine`), the cost model is fitted here, as
  `compress fit-cost-model` does (about 20 s on a quiet 2-core machine), and the fit is cached per CPU,
  runtime version and measurement settings, so a machine pays for it once. The latency the verdict rests on
  is measured either way, but the prices decide which channels go: with the other CPU's factors a pretrained
  ResNet-56 at a measured 1.5x kept 60.3 % top-1, fitted here 67.4 % (BENCHMARKS.md);
- otherwise (`for_this_machine`: a MACs or parameter budget, `--no-cost-fit`, a remote device) only the
  reference rates the efficiencies are fractions of are re-measured (a large conv and a memory copy:
  seconds), and the cost model is labelled as not fitted on this machine, with the command that fits it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("compress")


def same_machine(machine, here: dict) -> bool:
    """The fit's machine (schema FitMachine) and this one's fingerprint: same SIMD level and core count,
    and the recorded CPU name contained in this one's (a fit may record "AMD EPYC" for a longer name)."""
    return (machine is not None and machine.isa == here["isa"] and machine.cores == here["cores"]
            and machine.cpu.lower() in str(here["cpu"]).lower())


def describe_machine(machine) -> str:
    """A FitMachine, or a cpu_fingerprint() dict, in words."""
    if machine is None:
        return "an unrecorded CPU"
    m = machine if isinstance(machine, dict) else machine.model_dump()
    return f"{m['cpu']} ({m['isa']}, {m['cores']} cores)"


def fitted_here(profile) -> bool | None:
    """None: not a locally measured target with a fitted cost model; else whether the fit is this CPU's."""
    from edge_compress.deploy import cpu_fingerprint

    cm = profile.cost_model
    if profile.measurement.method != "local" or not cm.fitted:
        return None
    return same_machine(cm.fit.machine if cm.fit else None, cpu_fingerprint())


def for_this_machine(profile):
    """(profile, note): the profile unchanged when its fit is this CPU's (or it is not measured here);
    otherwise with re-measured reference rates, `fitted: false`, no fit record, and a note saying so."""
    if fitted_here(profile) is not False:
        return profile, None
    from edge_compress.deploy import cpu_fingerprint
    from edge_compress.device_profiles.schema import Fact

    from .measure import measure_reference_rates

    cm = profile.cost_model
    here = cpu_fingerprint()
    there = describe_machine(cm.fit.machine if cm.fit else None)
    this = describe_machine(here)
    log.info("the %s cost model was fitted on %s, not on this CPU, %s: re-measuring its reference rates ...",
             profile.name, there, this)
    threads = profile.measurement.threads or 1
    rates = measure_reference_rates(threads)
    today = datetime.date.today().isoformat()
    fix = f"compress fit-cost-model --target {profile.name} --write my-{profile.name}.yaml"
    cost_model = cm.model_copy(update=dict(
        fitted=False, fit=None,
        reference_gflops=Fact(value=rates["gflops"], confidence="measured",
                              source=f"best FP32 rate of ONNX Runtime, {threads} thread(s), on a 256->256 3x3 conv "
                                     f"at 32x32, re-measured on {this}, {today}"),
        reference_gbps=Fact(value=rates["gbps"], confidence="measured",
                            source=f"numpy copy of 128 MB, one thread, re-measured on {this}, {today}"),
        source=f"NOT fitted on this machine: efficiencies fitted on {there}, reference rates re-measured on "
               f"{this} ({rates['gflops']} GFLOPS, {rates['gbps']} GB/s); fit here with `{fix}`"))
    note = (f"the {profile.name} cost model was fitted on {there}, not on this CPU ({this}): its reference rates "
            f"were re-measured here and its predictions are labelled not fitted; the latencies in this report are "
            f"measured. `{fix}` fits it to this machine (about a minute)")
    return profile.model_copy(update={"cost_model": cost_model}), note


FIT_SAMPLES = 24   # as `compress fit-cost-model`: 2.7 % median error on a 2-core Xeon, 17 s quiet
CACHE_FORMAT = 1   # bump when the fit or the cached block changes meaning


def cache_dir() -> Path:
    """Where fitted host cost models are kept: $EDGE_COMPRESS_CACHE_DIR, else the XDG cache folder."""
    if os.environ.get("EDGE_COMPRESS_CACHE_DIR"):
        return Path(os.environ["EDGE_COMPRESS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-compress"


def cache_path(profile, folder: Path | None = None) -> Path:
    """The cache file of `profile`'s fit on this machine: one per CPU, runtime version and measurement settings
    (what the fitted factors depend on), and per starting factors (a user's profile may start elsewhere)."""
    import onnxruntime

    from edge_compress.deploy import cpu_fingerprint

    m = profile.measurement
    start = profile.cost_model.model_dump(mode="json", exclude={"fit", "fitted", "source", "reference_gflops",
                                                                "reference_gbps"})
    key = json.dumps({"format": CACHE_FORMAT, "cpu": cpu_fingerprint(), "onnxruntime": onnxruntime.__version__,
                      "threads": m.threads, "batch": m.batch_size, "opset": profile.runtime.opset,
                      "samples": FIT_SAMPLES, "start": start}, sort_keys=True, default=str)
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in profile.name)
    return (folder or cache_dir()) / "cost-models" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.yaml"


def fitted_for_this_machine(profile, folder: Path | None = None):
    """(profile, note): the profile unchanged when its fit is this CPU's (or it is not measured here); otherwise
    with its cost model fitted on this CPU, read from the cache when an earlier run fitted it, else fitted now and
    cached (a cache folder that cannot be written costs the next run another fit, and says so)."""
    if fitted_here(profile) is not False:
        return profile, None
    from edge_compress.deploy import atomic_write_text, cpu_fingerprint

    from .fit import fit_for_target
    from .profile_block import parse_block

    here = cpu_fingerprint()
    this = describe_machine(here)
    there = describe_machine(profile.cost_model.fit.machine if profile.cost_model.fit else None)
    path = cache_path(profile, folder)
    cost_model, problem = _read_cached(path, here)
    if cost_model is not None:
        fit = cost_model.fit
        log.info("the %s cost model fitted on this CPU on %s (median error %s %%) is read from %s",
                 profile.name, fit.date, fit.median_abs_error_pct, path)
        note = (f"the {profile.name} cost model was fitted on {there}; the one used was fitted on this CPU ({this}) "
                f"on {fit.date} ({fit.samples} networks, median error {fit.median_abs_error_pct} %) and read from "
                f"the cache {path}")
        return profile.model_copy(update={"cost_model": cost_model}), note
    if problem:
        log.warning("the cached cost model %s is not usable (%s): fitting again", path, problem)
    log.info("the %s cost model was fitted on %s, not on this CPU, %s: fitting it here on %d randomly pruned "
             "ResNet-20/56 variants (about 20 s, once per machine; --no-cost-fit skips it) ...",
             profile.name, there, this, FIT_SAMPLES)
    result, block = fit_for_target(profile, FIT_SAMPLES, 0)
    cost_model = parse_block(block, "the fit just made")
    stats = result.stats()
    note = (f"the {profile.name} cost model was fitted on {there}, not on this CPU ({this}): it was fitted here "
            f"before pruning ({FIT_SAMPLES} networks, median error {stats['median_abs_error_pct']} %, largest "
            f"{stats['max_abs_error_pct']} %)")
    try:
        atomic_write_text(path if path.parent.is_dir() else _made(path), "# Written by edge-compress: the "
                          f"{profile.name} cost model fitted on {this}; delete it to fit again.\n" + block)
        note += f" and cached in {path}"
    except OSError as e:
        log.warning("cannot cache the fitted cost model in %s (%s): the next run fits it again; set "
                    "EDGE_COMPRESS_CACHE_DIR to a writable folder", path, e.strerror or e)
        note += " (not cached: the cache folder is not writable)"
    if stats["median_abs_error_pct"] > 10:
        log.warning("the cost model fit here is poor (median error %s %%): a busy machine times unevenly; the "
                    "verdict is measured either way", stats["median_abs_error_pct"])
    return profile.model_copy(update={"cost_model": cost_model}), note


def _made(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _read_cached(path: Path, here: dict):
    """(cost model, None) from the cache file; (None, why) when it is there but unusable; (None, None) if absent.
    The file is data only: parsed as YAML and checked against the profile schema, never run."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read it: {getattr(e, 'strerror', None) or e}"
    import yaml

    from edge_compress.device_profiles import ProfileError

    from .profile_block import parse_block

    try:
        cost_model = parse_block(text, str(path))
    except (yaml.YAMLError, ProfileError, KeyError, TypeError) as e:   # ours to replace, not the run's to fail on
        return None, (str(e).splitlines() or [type(e).__name__])[0][:200]
    if not cost_model.fitted or cost_model.fit is None or not same_machine(cost_model.fit.machine, here):
        return None, "it was not fitted on this CPU"
    return cost_model, None
