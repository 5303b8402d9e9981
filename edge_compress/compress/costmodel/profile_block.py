"""The fitted `cost_model:` block of a profile: its YAML text, and writing it into a profile file."""
from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fit import FitResult

def cost_model_block(result: FitResult, data: str, command: str, source: str,
                     reference: dict | None = None, notes: tuple[str, ...] = (), machine: dict | None = None) -> str:
    """The YAML text of a fitted `cost_model:` block, provenance included (comments inside the block,
    so that a refit replaces them too); `machine`: the CPU a measured fit ran on (cpu, isa, cores)."""
    f, st = result.factors, result.stats()
    lines = ["cost_model:",
             "  # Efficiencies are fractions of reference_gflops / reference_gbps where given, else of the",
             "  # hardware peak at the runtime precision; channel_alignment pads channels up to the kernels' block.",
             "  # Written by the command in fit.command, with the data, date and error of the fit.",
             *(f"  # {n}" for n in notes),
             f"  compute_efficiency: {f.compute_efficiency:.4g}",
             f"  memory_efficiency: {f.memory_efficiency:.4g}",
             f"  layer_overhead_ms: {round(f.layer_overhead_ms, 6):.4g}",  # below a nanosecond is noise
             f"  network_overhead_ms: {round(f.network_overhead_ms, 6):.4g}"]
    if f.kind_efficiency:
        lines.append("  kind_efficiency:")
        lines += [f"    {k}: {v:.4g}" for k, v in sorted(f.kind_efficiency.items())]
    lines.append(f"  channel_alignment: {f.channel_alignment}")
    for key, fact in (reference or {}).items():
        lines.append(f"  {key}: {{value: {fact['value']}, source: {json.dumps(fact['source'])}, "
                     f"confidence: {fact['confidence']}}}")
    lines += ["  fitted: true", f"  source: {json.dumps(source)}", "  fit:",
              f"    data: {json.dumps(data)}", f"    date: \"{datetime.date.today().isoformat()}\"",
              f"    command: {json.dumps(command)}", f"    samples: {st['samples']}",
              f"    free_factors: [{', '.join(result.free_factors)}]",
              f"    median_abs_error_pct: {st['median_abs_error_pct']}",
              f"    max_abs_error_pct: {st['max_abs_error_pct']}",
              f"    share_within_10pct: {st['share_within_10pct']}"]
    if result.out_of_sample:
        lines.append("    out_of_sample:")
        lines += [f"      - {{network: {o['network']}, published_ms: {o['published_ms']}, "
                  f"predicted_ms: {o['predicted_ms']}, error_pct: {o['error_pct']}}}" for o in result.out_of_sample]
    if machine:
        lines.append(f"    machine: {{cpu: {json.dumps(str(machine['cpu']))}, isa: {machine['isa']}, "
                     f"cores: {machine['cores']}}}")
    return "\n".join(lines) + "\n"


def new_profile_text(profile, path: str | Path, block: str, extends: bool = True) -> str:
    """A complete profile for a file that does not exist yet: `extends:` the fitted built-in target with
    the new cost_model block, or (`extends` false, or a target that is itself a file) all of the target's
    keys written out with the new block."""
    import yaml

    from edge_compress.device_profiles.loader import BUILTIN_DIR

    path = Path(path)
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem) or "my-profile"
    head = f"# Written by `compress fit-cost-model --target {profile.name}` on {datetime.date.today().isoformat()}.\n"
    if extends and Path(profile.source_file).parent == BUILTIN_DIR:
        return (head + f"schema_version: 1\nextends: {profile.name}\nname: {name}\n"
                f"description: {json.dumps(f'{profile.name} with its cost model refitted (see cost_model.fit)')}\n"
                + block)
    data = {k: v for k, v in profile.to_dict().items() if k not in ("cost_model", "extends")}
    data["name"] = name
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + block


def check_writable(path: str | Path) -> None:
    """Raise InputError (one line) unless `path` is an existing regular file or can be created; checked
    before a fit that takes minutes, so a bad --write fails at once."""
    import os

    from ..errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"--write {path}: is a folder; give a profile file such as {path / 'my-profile.yaml'}")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise InputError(f"--write {path}: the file is not readable and writable; choose another file")
        return
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--write {path}: cannot create the file ({parent} is not a writable folder); "
                         "choose a writable location")


def write_cost_model(path: str | Path, block: str, profile=None) -> None:
    """Replace the file's top-level `cost_model:` block (or append one), keeping every other line and
    comment; a file that does not exist yet is created as a complete profile of `profile` (the fitted
    target, see new_profile_text). The result must load as a profile before it atomically replaces or
    creates the file."""
    from edge_compress.deploy import atomic_write_text
    from edge_compress.device_profiles import load_profile

    from ..errors import InputError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        if profile is None:
            raise InputError(f"--write {path}: the file does not exist; pass an existing profile file") from None
        lines = None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--write {path}: cannot read the file ({getattr(e, 'strerror', None) or e}); "
                         "pass a profile YAML file") from None
    start = next((i for i, ln in enumerate(lines or []) if ln.startswith("cost_model:")), None)
    if lines is None:
        new = new_profile_text(profile, path, block)
    elif start is None:
        new = "".join(lines).rstrip("\n") + "\n" + block
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].strip() and not lines[i].startswith(" ")), len(lines))
        new = "".join(lines[:start]) + block + "".join(lines[end:])
    with tempfile.TemporaryDirectory(prefix="costfit-check-") as tmp:
        check = Path(tmp) / path.name  # same name: a built-in's `name` must match its file name
        check.write_text(new, encoding="utf-8")
        loaded = load_profile(str(check))
        if lines is None and loaded.cost_model != parse_block(block, str(check)):
            # `extends:` merges key by key: a key of the base's cost model that the block leaves out (an
            # optional one) would survive into the new file. Write every key out instead.
            new = new_profile_text(profile, path, block, extends=False)
            check.write_text(new, encoding="utf-8")
            load_profile(str(check))
    try:
        atomic_write_text(path, new)
    except OSError as e:
        raise InputError(f"--write {path}: cannot write the file ({e.strerror or e}); choose a writable location") \
            from None


def parse_block(block: str, where: str):
    """The CostModel of a `cost_model:` block's YAML text (ProfileError naming `where` when it does not validate)."""
    import yaml

    from edge_compress.device_profiles.schema import CostModel, parse_section

    return parse_section(CostModel, yaml.safe_load(block)["cost_model"], where, key="cost_model")


