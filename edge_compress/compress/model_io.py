"""Loading user models and saving pruned ones.

Loading accepts (a) a state dict, or a checkpoint dict holding one, with an architecture; (b) a pickled
full nn.Module only with an explicit trust flag, since unpickling runs arbitrary code; (c) a TorchScript
archive, for export and measurement only; (d) a pruned model written by this tool. Everything else is a
one-line error naming the file, what was found and what to pass instead.

A pruned model is saved as data: the architecture spec, the shape of every resized layer, and the state
dict. `rebuild_pruned` applies those shapes to a fresh instance of the architecture, so reloading needs
the architecture's code but not the pruning code (timm's `_prune.py` does the same).

A pruned file is data, but its `arch` names code. Rebuilding runs only a built-in architecture, or a
`module:callable` the caller named itself (`arch=`, the CLI's --arch) or chose to trust (`trust_model`):
nothing read from a file decides which code is imported and called.
"""
from __future__ import annotations

import importlib
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .archs import ArchInfo, arch_names, get_arch
from .archs.resnet_cifar import PadShortcut, pad_of
from .errors import InputError, ModelLoadError

PRUNED_FORMAT = "edge-compress.pruned-model/1"
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")


@dataclass
class LoadedModel:
    module: nn.Module
    kind: str  # "state_dict" | "pickled-module" | "torchscript" | "pruned"
    path: Path
    arch: str | None  # registry name or "package.module:callable"
    arch_kwargs: dict
    arch_info: ArchInfo | None

    @property
    def prunable(self) -> bool:
        return self.kind != "torchscript"


def _quote(value: Any, limit: int = 80) -> str:
    """repr of a value for a one-line message, cut to `limit` characters (values may come from files)."""
    text = repr(value) if not isinstance(value, str) or len(value) <= 4 * limit else repr(value[: 4 * limit])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_builtin_arch(spec: Any) -> bool:
    """Whether `spec` names a registered (built-in) architecture: code of this package, safe to run."""
    return isinstance(spec, str) and ":" not in spec and spec in arch_names()


def resolve_arch(spec: str, kwargs: dict | None = None) -> tuple[nn.Module, ArchInfo | None]:
    """Build a model from a registry name or an importable `package.module:callable`.

    `spec` is imported and called: pass only a name the user gave (or a built-in), never one read from a file
    unchecked (see `rebuild_pruned`).
    """
    kwargs = dict(kwargs or {})
    if ":" not in spec:
        try:
            info = get_arch(spec)
        except KeyError:
            raise InputError(f"--arch {_quote(spec)}: not a built-in architecture ({', '.join(arch_names())}) "
                             "and not of the form package.module:callable") from None
        return _call(info.factory, spec, {**info.default_kwargs, **kwargs}), info
    mod_name, _, attr = spec.partition(":")
    if mod_name in HUB_FACTORIES:
        return _call(_hub_factory(spec, mod_name, attr), spec, kwargs), None
    mod = _import(spec, mod_name)
    factory = mod
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise InputError(f"--arch {_quote(spec)}: module {_quote(mod_name)} has no attribute {_quote(attr)}")
    if not callable(factory):
        raise InputError(f"--arch {_quote(spec)}: {_quote(attr)} is not callable")
    return _call(factory, spec, kwargs), None


# `--arch timm:resnet18` is timm.create_model("resnet18", **kwargs), as timm's users name models;
# `--arch torchvision:resnet18` is torchvision.models.get_model("resnet18", **kwargs) (weights=None by default:
# the weights come from the model file). `torchvision.models:resnet18` calls the function itself, as any
# package.module:callable. The pip names say how to install a missing one.
HUB_FACTORIES = {"timm": ("timm", "create_model", "timm"), "torchvision": ("torchvision.models", "get_model",
                                                                          "torchvision")}


def _hub_factory(spec: str, hub: str, name: str):
    module, function, pip_name = HUB_FACTORIES[hub]
    if not name or "." in name or ":" in name:
        raise InputError(f"--arch {_quote(spec)}: name a {hub} model after the colon, e.g. {hub}:resnet18")
    create = getattr(_import(spec, module), function, None)
    if create is None:
        raise InputError(f"--arch {_quote(spec)}: this {hub} has no {module}.{function}; upgrade it "
                         f"(pip install -U {pip_name}) or use --arch {module}:{name}")

    def factory(**kwargs):
        try:
            return create(name, **kwargs)
        except (RuntimeError, ValueError, KeyError) as e:   # timm: RuntimeError, torchvision: ValueError
            raise InputError(f"--arch {_quote(spec)}: {hub} cannot build {_quote(name)} ({_short(e)}); see "
                             f"{'timm.list_models()' if hub == 'timm' else 'torchvision.models.list_models()'}") \
                from None
    return factory


def _import(spec: str, mod_name: str):
    """The module, or one line: not installed (with the pip command for the packages we know), or failing."""
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        top = mod_name.split(".")[0]
        pip = {"timm": "timm", "torchvision": "torchvision"}.get(top)
        if pip and e.name and (mod_name + ".").startswith(e.name + "."):   # the module asked for, or a package above
            raise InputError(f"--arch {_quote(spec)}: {_quote(top)} is not installed; install it with "
                             f"`pip install {pip}` (the build matching your torch)") from None
        raise InputError(f"--arch {_quote(spec)}: cannot import module {_quote(mod_name)} ({type(e).__name__}: "
                         f"{_short(e)}); check the name and that its package is installed or on PYTHONPATH") from None
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix; say which
        raise InputError(f"--arch {_quote(spec)}: cannot import module {_quote(mod_name)} ({type(e).__name__}: "
                         f"{_short(e)}); check the name and that its package is installed or on PYTHONPATH") from None


def _call(factory, spec: str, kwargs: dict) -> nn.Module:
    try:
        model = factory(**kwargs)
    except TypeError as e:
        given = json.dumps(kwargs, default=str)
        given = given if len(given) <= 200 else given[:197] + "..."
        raise InputError(f"--arch {_quote(spec)} with --arch-kwargs {given}: {_short(e)}") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"--arch {_quote(spec)} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(path: str | Path, arch: str | None = None, arch_kwargs: dict | None = None,
               trust_model: bool = False) -> LoadedModel:
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist; pass the path to a .pt/.pth/.th file")
    if path.is_dir():
        raise ModelLoadError(f"model path {path} is a folder; pass the model file itself")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model file {path} is empty; re-save it with torch.save")
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"model file {path} looks like TorchScript but does not load ({_short(e)})") from None
        return LoadedModel(module.eval(), "torchscript", path, None, {}, None)
    obj = _torch_load(path, trust_model)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.eval(), "pickled-module", path, arch, dict(arch_kwargs or {}), None)
    if isinstance(obj, dict) and obj.get("format") == PRUNED_FORMAT:
        module, info = rebuild_pruned(obj, path, arch=arch, trust_model=trust_model)
        return LoadedModel(module.eval(), "pruned", path, obj["arch"], obj["arch_kwargs"], info)
    state_dict = _find_state_dict(obj, path)
    if arch is None:
        raise ModelLoadError(f"{path} holds a state dict ({len(state_dict)} tensors) but no architecture; "
                             f"pass --arch NAME (built-in: {', '.join(arch_names())}) or --arch package.module:callable")
    module, info = resolve_arch(arch, arch_kwargs)
    _load_state_dict(module, state_dict, path, arch)
    return LoadedModel(module.eval(), "state_dict", path, arch, dict(arch_kwargs or {}), info)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def _torch_load(path: Path, trust_model: bool) -> Any:
    # torch.save writes a zip archive ("PK") or, in the legacy format, a pickle starting with PROTO
    # (0x80). Anything else (text, random bytes) would be parsed as protocol-0 pickle opcodes: a text
    # file starting with "c" reads as GLOBAL and would be reported as a pickled module.
    with open(path, "rb") as f:
        head = f.read(2)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise ModelLoadError(f"{path} is not a PyTorch file (neither a zip archive nor a pickle); "
                             "pass a file written by torch.save")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Since torch 2.6 every weights_only failure mentions "weights_only"; only "Unsupported global"
        # means the pickle names a class or function, i.e. a pickled object rather than damaged bytes.
        if "Unsupported global" not in str(e):
            raise ModelLoadError(f"{path} is not a PyTorch file ({_short(e)}); pass a file written by torch.save") from None
        if not trust_model:
            raise ModelLoadError(f"{path} is a pickled Python object (full module), and unpickling runs arbitrary code; "
                                 "pass --trust-model if you trust its source, or save model.state_dict() and pass --arch") from None
    except RuntimeError as e:
        msg = str(e)
        if "central directory" in msg or "zip archive" in msg or "file not found" in msg.lower():
            raise ModelLoadError(f"{path} is truncated or corrupt ({_short(e)}); re-save or re-download it") from None
        raise ModelLoadError(f"{path} does not load with torch.load ({_short(e)})") from None
    except (EOFError, OSError, ValueError, UnicodeDecodeError, KeyError, IndexError) as e:  # random bytes, text
        raise ModelLoadError(f"{path} is not a PyTorch file or is truncated ({_short(e)}); "
                             "pass a file written by torch.save") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything; say what and stop
        raise ModelLoadError(f"{path}: unpickling the module failed ({_short(e)}); the classes it needs must be importable") from None


def _find_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return {k.removeprefix("module."): v for k, v in tensors.items()}
    found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with keys {list(obj)[:6]}"
    raise ModelLoadError(f"{path} holds {found}, not a state dict or a checkpoint with one under "
                         f"{'/'.join(_CHECKPOINT_KEYS)}; save model.state_dict() and pass --arch")


def _load_state_dict(module: nn.Module, state_dict: dict, path: Path, arch: str) -> None:
    own = module.state_dict()
    # Checkpoints from PyTorch < 0.4.1 lack BatchNorm's step counter; it is bookkeeping, not a weight.
    state_dict = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state_dict}
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if shape:
            parts.append(f"shape mismatch {len(shape)} (e.g. {'; '.join(shape[:3])})")
        raise ModelLoadError(f"{path} does not match --arch {arch}: {'; '.join(parts)}; "
                             "pass the architecture (and --arch-kwargs) the weights were trained with")
    module.load_state_dict(state_dict, strict=True)


# ---- pruned models -------------------------------------------------------------------------------

def layer_shapes(model: nn.Module) -> dict[str, dict[str, int]]:
    """The constructor attributes that pruning changes, per layer: the pruned architecture as data."""
    shapes: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            shapes[name] = {"in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            shapes[name] = {"num_features": m.num_features}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"in_features": m.in_features, "out_features": m.out_features}
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            attrs = {"num_channels": m.num_channels, "num_groups": m.num_groups} if isinstance(m, nn.GroupNorm) \
                else {"normalized_shape": list(m.normalized_shape)}
            shapes[name] = attrs
        elif isinstance(m, PadShortcut):
            shapes[name] = {"in_channels": m.in_channels, "source_in_channels": m.source_in_channels,
                            "channel_map": list(m.channel_map)}
    return shapes


def pruned_checkpoint(model: nn.Module, arch: str, arch_kwargs: dict, extra: dict | None = None) -> dict:
    from .pruning.depth import removable_blocks

    current = dict(model.named_modules())
    removed = [n for n in removable_blocks(resolve_arch(arch, arch_kwargs)[0]) if isinstance(current.get(n), nn.ReLU)]
    return {"format": PRUNED_FORMAT, "arch": arch, "arch_kwargs": dict(arch_kwargs), "removed_blocks": removed,
            "shapes": layer_shapes(model), "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "info": dict(extra or {})}


def save_pruned_bytes(model: nn.Module, arch: str, arch_kwargs: dict, extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    torch.save(pruned_checkpoint(model, arch, arch_kwargs, extra), buf)
    return buf.getvalue()


# The constructor attributes `layer_shapes` writes, the only ones rebuilding sets (each an int, or a list of
# ints for normalized_shape): a file cannot set forward, hooks or anything else on a layer.
_SHAPE_KEYS = frozenset({"in_channels", "out_channels", "groups", "num_features", "in_features", "out_features",
                         "num_channels", "num_groups", "normalized_shape", "source_in_channels"})
# An option-A shortcut's channel map (output position -> input channel, -1 for zeros): a list of ints too.
_LIST_KEYS = {"normalized_shape": 0, "channel_map": -1}   # key -> the smallest value allowed


def check_pruned_arch(ckpt_arch: Any, path: Path | str, arch: str | None = None, trust_model: bool = False) -> None:
    """Refuse to rebuild from an architecture the file names unless it is built-in or the user named it.

    A built-in name runs only this package's code. A `module:callable` is imported and called, so it must be
    the one the user passed (`arch`, the CLI's --arch) or the user must trust the file (`trust_model`).
    """
    if not isinstance(ckpt_arch, str) or not ckpt_arch:
        raise ModelLoadError(f"{path}: the pruned model's 'arch' is {_quote(ckpt_arch)}, not an architecture name; "
                             "re-create the file with compress")
    if is_builtin_arch(ckpt_arch) or trust_model or (arch is not None and arch == ckpt_arch):
        return
    if ":" not in ckpt_arch:
        raise ModelLoadError(f"{path}: the pruned model's architecture {_quote(ckpt_arch)} is not built-in "
                             f"({', '.join(arch_names())}); re-create the file with compress")
    named = ckpt_arch if len(ckpt_arch) <= 80 and ckpt_arch.isprintable() and " " not in ckpt_arch else "<that name>"
    raise ModelLoadError(f"{path} names the architecture {_quote(ckpt_arch)}, code that rebuilding would import and "
                         f"run; pass --arch {named} if you trust it, or --trust-model")


def _check_pruned_fields(ckpt: dict, path: Path | str) -> None:
    """The fields rebuilding reads, with their types: a damaged or crafted file is a one-line error."""
    def bad(what: str) -> ModelLoadError:
        return ModelLoadError(f"{path} is not a valid pruned model ({what}); re-create it with compress")

    if not isinstance(ckpt.get("arch_kwargs"), dict) or not all(isinstance(k, str) for k in ckpt["arch_kwargs"]):
        raise bad("'arch_kwargs' is not a mapping of names to values")
    removed = ckpt.get("removed_blocks", [])
    if not isinstance(removed, list) or not all(isinstance(n, str) and n for n in removed):
        raise bad("'removed_blocks' is not a list of layer names")
    shapes = ckpt.get("shapes")
    if not isinstance(shapes, dict):
        raise bad("'shapes' is missing or not a mapping")
    for name, attrs in shapes.items():
        if not isinstance(name, str) or not isinstance(attrs, dict):
            raise bad(f"shapes entry {_quote(name)} is not a layer name with a mapping of sizes")
        for key, value in attrs.items():
            ints = value if key in _LIST_KEYS and isinstance(value, list) else [value]
            if (key not in _SHAPE_KEYS and key not in _LIST_KEYS) or \
                    not all(type(v) is int and v >= _LIST_KEYS.get(key, 0) for v in ints):
                raise bad(f"layer {_quote(name)} has {_quote(key)}: {_quote(value)}, not a layer size")
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise bad("'state_dict' is missing or not a mapping of names to tensors")


def rebuild_pruned(ckpt: dict, path: Path | str = "<memory>", *, arch: str | None = None,
                   trust_model: bool = False) -> tuple[nn.Module, ArchInfo | None]:
    """Re-create a pruned model from its checkpoint: fresh architecture, shapes applied, weights loaded.

    The checkpoint's architecture must be built-in, equal to `arch` (named by the user), or `trust_model`
    must be set; otherwise ModelLoadError, and nothing is imported or called.
    """
    check_pruned_arch(ckpt.get("arch"), path, arch, trust_model)
    _check_pruned_fields(ckpt, path)
    module, info = resolve_arch(ckpt["arch"], ckpt["arch_kwargs"])
    arch_name = _quote(ckpt["arch"])
    for name in ckpt.get("removed_blocks", []):   # depth pruning: the block became relu(x)
        if name not in dict(module.named_modules()):
            raise ModelLoadError(f"{path}: removed block {_quote(name)} does not exist in --arch {arch_name}")
        parent_name, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, leaf, nn.ReLU())
    modules = dict(module.named_modules())
    for name, attrs in ckpt["shapes"].items():
        m = modules.get(name)
        if m is None:
            raise ModelLoadError(f"{path}: pruned layer {_quote(name)} does not exist in --arch {ckpt['arch']}")
        if "channel_map" in attrs:
            _rebuild_shortcut(module, name, m, attrs, path, arch_name)
            continue
        for key, value in attrs.items():
            if not hasattr(m, key):
                raise ModelLoadError(f"{path}: pruned layer {_quote(name)} ({type(m).__name__}) has no size "
                                     f"{_quote(key)}; the file does not match --arch {arch_name}")
            setattr(m, key, tuple(value) if key == "normalized_shape" else value)
    # Parameters and buffers take their shapes from the saved tensors; the attributes above keep
    # forward() (groups, num_features) consistent with them.
    sd = ckpt["state_dict"]
    for key, tensor in sd.items():
        owner_name, _, leaf = key.rpartition(".")
        owner = modules.get(owner_name)
        if owner is None:
            raise ModelLoadError(f"{path}: tensor {_quote(key)} has no layer in --arch {arch_name}")
        current = getattr(owner, leaf, None)
        if isinstance(current, nn.Parameter):
            setattr(owner, leaf, nn.Parameter(torch.empty_like(tensor), requires_grad=current.requires_grad))
        elif isinstance(current, torch.Tensor):
            owner.register_buffer(leaf, torch.empty_like(tensor))
    _load_state_dict(module, sd, Path(str(path)), ckpt["arch"])
    return module.eval(), info


def _rebuild_shortcut(model: nn.Module, name: str, m: nn.Module, attrs: dict, path, arch_name: str) -> None:
    """A pruned option-A shortcut: the architecture's PadShortcut, or the user's pad module it was converted
    from (checked to compute exactly that pad, as when it was pruned), gets the saved channel map."""
    if set(attrs) != {"in_channels", "source_in_channels", "channel_map"}:
        raise ModelLoadError(f"{path}: shortcut {_quote(name)} is not recorded as in_channels, source_in_channels "
                             "and channel_map; re-create the file with compress")
    source = attrs["source_in_channels"]
    if not isinstance(m, PadShortcut):
        pad = pad_of(m, (2, source, 8, 8)) if source > 0 else None
        if pad is None:
            raise ModelLoadError(f"{path}: pruned shortcut {_quote(name)} ({type(m).__name__}) is not a zero-padding "
                                 f"shortcut in --arch {arch_name}; the file does not match the architecture")
        m = PadShortcut(source, pad)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, m)
    if m.source_in_channels != source:
        raise ModelLoadError(f"{path}: shortcut {_quote(name)} was built from {source} channels, --arch {arch_name} "
                             f"builds it from {m.source_in_channels}; the file does not match the architecture")
    try:
        m.set_channel_map(attrs["in_channels"], attrs["channel_map"])
    except ValueError as e:
        raise ModelLoadError(f"{path}: shortcut {_quote(name)}: {e}; re-create the file with compress") from None


def load_pruned(path: str | Path, *, arch: str | None = None, trust_model: bool = False) -> nn.Module:
    """Reload a `model.pruned.pt` (weights_only: plain tensors and containers, nothing unpickled runs).

    A built-in architecture rebuilds as is. One of your own (`package.module:callable`) is imported and called
    only when you name it (`arch="package.module:callable"`, equal to the file's) or pass `trust_model=True`.
    """
    ckpt = _torch_load(Path(path), trust_model=False)   # weights_only: a pickled object is refused, not run
    if not (isinstance(ckpt, dict) and ckpt.get("format") == PRUNED_FORMAT):
        raise ModelLoadError(f"{path} is not a pruned model written by compress")
    return rebuild_pruned(ckpt, path, arch=arch, trust_model=trust_model)[0]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:160]
