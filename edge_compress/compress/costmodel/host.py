"""A measured target's cost model on the machine at hand.

The `host` profile's factors were fitted on one CPU (cost_model.fit.machine). On another CPU they describe
that other machine: on an Intel Xeon the measured latency was 3.3x the prediction in every round while
the report still quoted the fit's 0.87 % error. So before the factors are used, the CPU is compared with
the fit's; where it differs, the reference rates the efficiencies are fractions of are re-measured here
(a large conv and a memory copy: seconds), and the cost model is labelled as not fitted on this machine,
with the command that fits it. The latency the verdict rests on is measured either way; the cost model
only prices pruning moves on such a target.
"""
from __future__ import annotations

import datetime
import logging

log = logging.getLogger("compress")


def same_machine(machine, here: dict) -> bool:
    """The fit's machine (schema FitMachine) and this one's fingerprint: same SIMD level and core count,
    and the recorded CPU name contained in this one's (a fit may record "AMD EPYC" for a longer name)."""
    return (machine is not None and machine.isa == here["isa"] and machine.cores == here["cores"]
            and machine.cpu.lower() in str(here["cpu"]).lower())


def describe_machine(machine) -> str:
    return f"{machine.cpu} ({machine.isa}, {machine.cores} cores)" if machine is not None else "an unrecorded CPU"


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
    this = f"{here['cpu']} ({here['isa']}, {here['cores']} cores)"
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
