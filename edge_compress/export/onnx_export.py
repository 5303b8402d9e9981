"""PyTorch -> ONNX at an exact opset, checked, shape-inferred, written atomically."""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
import torch

from .atomic import atomic_write_bytes, sha256_bytes
from .errors import ExportError, one_line
from .failures import explain_export_failure
from .onnx_info import default_opset, op_types, value_shape
from .torch_mode import eval_mode

Exporter = Literal["torchscript", "dynamo"]

# The TorchScript exporter is deprecated but is the only one that emits opset <= 17
# directly (TensorRT 8.2 on the Jetson Nano parses opset <= 13); the torch.export
# based one starts at 18 and would need the lossy-prone version converter below it.
LAST_TORCHSCRIPT_DEFAULT_OPSET = 17
MIN_OPSET = 7
_DYNAMIC_DIM = "batch"


@dataclass(frozen=True)
class ExportResult:
    """What was written. ``exporter == "torchscript"`` means the legacy exporter was used."""

    path: Path
    opset: int
    exporter: Exporter
    input_name: str
    output_name: str
    input_shape: tuple[int | str, ...]  # a str is a symbolic (dynamic) dimension
    output_shape: tuple[int | str, ...]
    num_nodes: int
    op_types: tuple[str, ...]
    sha256: str
    # every output, in the graph's order (output_name/output_shape are the first's)
    output_names: tuple[str, ...] = ()
    output_shapes: tuple[tuple[int | str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "exporter": self.exporter,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "output_names": list(self.output_names or (self.output_name,)),
            "output_shapes": [list(s) for s in (self.output_shapes or (self.output_shape,))],
            "num_nodes": self.num_nodes,
            "op_types": list(self.op_types),
            "sha256": self.sha256,
        }


def export_onnx(
    model: torch.nn.Module,
    example_input: torch.Tensor,
    path: str | Path,
    opset: int,
    input_name: str = "input",
    output_name: str = "output",
    dynamic_batch: bool = False,
) -> ExportResult:
    """Export ``model`` (eval mode, no grad) to ``path`` at exactly ``opset``.

    The model takes one tensor and returns a tensor, or a tuple, list or dict of tensors (nested
    ones too); the ONNX outputs are named by ``output_names_for``: ``output_name`` for a single
    tensor, ``{output_name}_0..n`` for a sequence, the (sanitised) keys for a dict.

    opset <= 17, or any ``torch.jit.ScriptModule``: TorchScript exporter. opset >= 18:
    the torch.export-based exporter (needs onnxscript). The file passes the full ONNX
    checker, carries inferred shapes, and is byte-identical across repeated exports
    of the same model. Raises ExportError (one line) if the model cannot be exported;
    nothing is written to ``path`` then.
    """
    _validate(model, example_input, opset, input_name, output_name)
    exporter = choose_exporter(model, opset)
    with eval_mode(model), torch.no_grad():
        try:
            names = output_names_for(model(example_input), output_name, reserved=(input_name,))
        except ExportError:
            raise
        except Exception as exc:
            raise explain_export_failure(exc, model, example_input, opset, exporter) from exc
        try:
            if exporter == "torchscript":
                data = _torchscript_bytes(model, example_input, opset, input_name, names, dynamic_batch)
            else:
                data = _dynamo_bytes(model, example_input, opset, input_name, names, dynamic_batch)
        except ExportError:
            raise
        except Exception as exc:
            raise explain_export_failure(exc, model, example_input, opset, exporter) from exc
    checked = _checked_model(data, opset, names)
    payload = checked.SerializeToString()
    target = atomic_write_bytes(path, payload)
    graph = checked.graph
    return ExportResult(
        path=target,
        opset=opset,
        exporter=exporter,
        input_name=graph.input[0].name,
        output_name=graph.output[0].name,
        input_shape=value_shape(graph.input[0]),
        output_shape=value_shape(graph.output[0]),
        num_nodes=len(graph.node),
        op_types=op_types(checked),
        sha256=sha256_bytes(payload),
        output_names=tuple(o.name for o in graph.output),
        output_shapes=tuple(value_shape(o) for o in graph.output),
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def flatten_outputs(outputs: Any, output_name: str = "output",
                    reserved: tuple[str, ...] = ()) -> list[tuple[str, torch.Tensor]]:
    """A model's outputs as (ONNX output name, tensor) pairs, in the order the exporters flatten them.

    A tensor is ``output_name``; a tuple or list is ``{output_name}_0``, ``{output_name}_1``, ...; a dict
    is its keys, each made an identifier (characters other than letters, digits and ``_`` become ``_``,
    a leading digit or an empty key gets the ``output_name`` prefix). Nested structures join the parts
    with ``_`` (``output_1_boxes``). A name that is taken already (or in ``reserved``, e.g. the input's)
    gets ``_2``, ``_3``, ... Anything but tensors in the structure raises ExportError.
    """
    pairs: list[tuple[str, torch.Tensor]] = []
    taken = set(reserved)

    def unique(name: str) -> str:
        base, n = name, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name)
        return name

    def walk(obj: Any, name: str, where: str, top: bool) -> None:
        if isinstance(obj, torch.Tensor):
            pairs.append((unique(name), obj))
        elif isinstance(obj, (tuple, list)):
            if not obj:
                raise ExportError(f"the model returns an empty {type(obj).__name__} at {where}; "
                                  "return tensors, or tuples, lists or dicts of tensors")
            for i, item in enumerate(obj):
                walk(item, f"{name}_{i}", f"{where}[{i}]", False)
        elif isinstance(obj, dict):
            if not obj:
                raise ExportError(f"the model returns an empty dict at {where}; "
                                  "return tensors, or tuples, lists or dicts of tensors")
            for key, item in obj.items():
                part = _UNSAFE.sub("_", str(key))
                if top:
                    part = part if part and not part[0].isdigit() else f"{name}_{part}".rstrip("_")
                    walk(item, part, f"{where}[{key!r}]", False)
                else:
                    walk(item, f"{name}_{part}".rstrip("_"), f"{where}[{key!r}]", False)
        else:
            raise ExportError(f"the model returns {type(obj).__name__} at {where}; ONNX export needs tensors, "
                              "or tuples, lists or dicts of tensors")

    walk(outputs, output_name, "the output", True)
    return pairs


def output_names_for(outputs: Any, output_name: str = "output", reserved: tuple[str, ...] = ()) -> list[str]:
    """The ONNX output names of a model output structure (see ``flatten_outputs``)."""
    return [name for name, _ in flatten_outputs(outputs, output_name, reserved)]


def choose_exporter(model: torch.nn.Module, opset: int) -> Exporter:
    if isinstance(model, torch.jit.ScriptModule) or opset <= LAST_TORCHSCRIPT_DEFAULT_OPSET:
        return "torchscript"
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError(
            f"opset {opset} needs the torch.export-based ONNX exporter, which needs onnxscript: "
            "pip install onnxscript (or export at opset <= 17)"
        )
    return "dynamo"


def _validate(model: object, example: object, opset: object, input_name: str, output_name: str) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example).__name__}")
    if example.dim() == 0 or example.shape[0] == 0:
        raise ValueError(f"example_input needs a non-empty batch dimension, got shape {tuple(example.shape)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    if not input_name or not output_name or input_name == output_name:
        raise ValueError(f"input_name and output_name must be distinct and non-empty, got {input_name!r}, {output_name!r}")


def _torchscript_bytes(
    model: torch.nn.Module, example: torch.Tensor, opset: int, input_name: str, output_names: list[str], dynamic: bool
) -> bytes:
    buffer = io.BytesIO()
    axes = {input_name: {0: _DYNAMIC_DIM}, **{n: {0: _DYNAMIC_DIM} for n in output_names}} if dynamic else None
    with _quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _dynamo_bytes(
    model: torch.nn.Module, example: torch.Tensor, opset: int, input_name: str, output_names: list[str], dynamic: bool
) -> bytes:
    shapes = None
    if dynamic:
        if example.shape[0] == 1:
            # torch.export specialises a dimension whose example size is 1, so a batch-1
            # example can never yield a dynamic batch; eval-mode CNNs treat samples
            # independently, so a repeated sample is an equally valid example.
            example = example.repeat(2, *([1] * (example.dim() - 1)))
        shapes = ({0: torch.export.Dim(_DYNAMIC_DIM)},)
    with _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            None,
            dynamo=True,
            verbose=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=list(output_names),
            dynamic_shapes=shapes,
        )
    return program.model_proto.SerializeToString()


def _checked_model(data: bytes, opset: int, names: list[str]) -> onnx.ModelProto:
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ExportError(f"exported ONNX model fails the ONNX checker: {one_line(exc)}") from exc
    found = default_opset(inferred)
    if found != opset:
        raise ExportError(f"exporter wrote opset {found} but opset {opset} was requested")
    if len(inferred.graph.input) != 1:
        raise ExportError(
            f"exported graph has {len(inferred.graph.input)} inputs; export_onnx supports models that take one tensor"
        )
    got = [o.name for o in inferred.graph.output]
    if got != list(names):
        raise ExportError(
            f"exported graph has outputs {got[:8]} but the model returns {len(names)} tensors {list(names)[:8]}; "
            "return each tensor once (the exporter merges repeated or constant outputs)"
        )
    return inferred


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    # Only noise the caller cannot act on is silenced: the legacy exporter's
    # deprecation notice (the choice is deliberate, see LAST_TORCHSCRIPT_DEFAULT_OPSET),
    # torch-internal pytree deprecations, and the dynamo registry's note that
    # torchvision ops are unavailable. TracerWarnings and the like still show.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        registry_log.setLevel(level)
