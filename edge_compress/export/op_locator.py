"""Find which submodule of a model calls a given operator.

Exporters report the operator they cannot convert but not where it came from; on
a pruned 50-layer network "aten::linalg_svd is not supported" is only actionable
with the module's qualified name. Both lookups re-capture the model the way the
failing exporter did, so the op names match the exporter's own spelling. They
run only after a failure and are best effort: any problem yields no names.
"""

from __future__ import annotations

import warnings

import torch

ModuleRef = tuple[str, str]  # (qualified name, "" for the root; class name)


def modules_using_torchscript_op(
    model: torch.nn.Module, example: torch.Tensor, op: str
) -> list[ModuleRef]:
    """Modules whose own TorchScript graph contains ``op`` (e.g. ``"aten::linalg_svd"``).

    Tracing keeps the module hierarchy: each submodule has its own graph in which
    calls to children are ``prim::CallMethod``, so an op in a module's graph is
    called by that module's forward itself, not by a descendant.
    """
    try:
        if isinstance(model, torch.jit.ScriptModule):
            scripted = model
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                scripted = torch.jit.trace(model, (example,), check_trace=False)
        found = []
        for name, module in scripted.named_modules():
            graph = _forward_graph(module)
            if graph is not None and graph.findAllNodes(op, True):
                found.append((name, _original_class_name(model, name, module)))
        if isinstance(model, torch.jit.ScriptModule):
            # The failed export has inlined the user's scripted submodules into their
            # parents, so every ancestor now "contains" the op: keep the deepest.
            found = [ref for ref in found if not any(_is_ancestor(ref[0], other[0]) for other in found)]
        return found
    except Exception:  # noqa: BLE001 - locating is a courtesy; the export error is what matters
        return []


def modules_using_aten_overload(
    model: torch.nn.Module, example: torch.Tensor, op: str
) -> list[ModuleRef]:
    """Modules calling ``op`` (e.g. ``"aten::_linalg_svd"``) in torch.export's decomposed graph.

    The dynamo ONNX exporter translates that graph, so the failing overload is a
    node in it; each node carries the stack of modules that were active.
    """
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, (example,), strict=False).run_decompositions()
        found: list[ModuleRef] = []
        for node in program.graph.nodes:
            target = getattr(node.target, "name", None)
            if node.op != "call_function" or not callable(target) or target() != op:
                continue
            stack = node.meta.get("nn_module_stack") or {}
            name = list(stack.values())[-1][0] if stack else ""
            ref = (name, _original_class_name(model, name, None))
            if ref not in found:
                found.append(ref)
        return found
    except Exception:  # noqa: BLE001 - see modules_using_torchscript_op
        return []


def _forward_graph(module: torch.nn.Module) -> torch.Graph | None:
    try:
        return module.graph
    except (AttributeError, RuntimeError):  # containers such as ModuleDict have no forward
        return None


def _is_ancestor(name: str, other: str) -> bool:
    return name != other and (name == "" or other.startswith(name + "."))


def _original_class_name(model: torch.nn.Module, name: str, fallback: object) -> str:
    # Traced submodules are TracedModule wrappers; report the user's class instead.
    try:
        module = model.get_submodule(name)
    except (AttributeError, RuntimeError):  # RuntimeError: ScriptModules refuse get_submodule
        module = fallback
    if module is None:
        return "?"
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", type(module).__name__))
    return type(module).__name__
