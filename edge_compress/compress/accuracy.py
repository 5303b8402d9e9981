"""How much the pruned model still does what the original did, for every kind of model.

The task is read from the model's outputs on the calibration data (and the labels' shape):

- classification: one output (N, C), C >= 2 (or (N, C, 1, 1)), labels (N,) or none: top-1 against the
  labels, and the share of samples whose top-1 class did not change (agreement with the original);
- segmentation (per-pixel classes): one output (N, C, H, W) with H x W > 1, labels (N, H, W) or none:
  mean IoU of the argmax maps against the labels, or against the original's argmax maps, and the
  share of pixels whose class did not change;
- everything else (boxes, embeddings, several outputs): per output, the relative L2 error
  ||final - original|| / ||original|| over the calibration data and the mean per-sample cosine
  similarity, against the original. Labels, if any, are not used (and the report says so).

Everything is accumulated batch by batch, so no model's outputs over the whole data are held at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from edge_compress.export.onnx_export import flatten_outputs

from .errors import InputError

CLASSIFICATION, SEGMENTATION, OUTPUTS = "classification", "segmentation", "outputs"
TASKS = (CLASSIFICATION, SEGMENTATION, OUTPUTS)
BATCH = 64


def output_tensors(out) -> list[tuple[str, torch.Tensor]]:
    """A model's outputs as (name, tensor) pairs, named as in the exported ONNX model (whose input is `input`)."""
    return flatten_outputs(out, reserved=("input",))


@dataclass(frozen=True)
class Task:
    kind: str                       # one of TASKS
    classes: int | None = None      # classification / segmentation: the number of classes (channels)
    names: tuple[str, ...] = ()     # the outputs, as named in the ONNX model
    shapes: tuple[tuple[int, ...], ...] = ()   # per sample (without the batch dimension)

    def describe(self) -> str:
        if self.kind == CLASSIFICATION:
            return f"classification ({self.classes} classes)"
        if self.kind == SEGMENTATION:
            return f"per-pixel classification ({self.classes} classes)"
        return f"{len(self.names)} output(s) compared with the original's ({', '.join(self.names[:6])})"


def detect_task(outputs: list[tuple[str, torch.Tensor]], labels: torch.Tensor | None) -> Task:
    """The task of a model from its outputs on one batch, and the labels' shape (None: no labels)."""
    names = tuple(n for n, _ in outputs)
    shapes = tuple(tuple(int(d) for d in t.shape[1:]) for _, t in outputs)
    if len(outputs) == 1:
        t = outputs[0][1]
        if t.is_floating_point() and t.dim() == 2 and t.shape[1] >= 2:
            return Task(CLASSIFICATION, int(t.shape[1]), names, shapes)
        if t.is_floating_point() and t.dim() == 4 and t.shape[1] >= 2:
            if t.shape[2] * t.shape[3] == 1:
                return Task(CLASSIFICATION, int(t.shape[1]), names, shapes)
            if labels is None or labels.dim() == 3:
                return Task(SEGMENTATION, int(t.shape[1]), names, shapes)
    return Task(OUTPUTS, None, names, shapes)


def check_labels(task: Task, labels: torch.Tensor | None, data: str) -> str | None:
    """Refuse labels that do not fit the task (InputError, one line); a note when they are not used."""
    if labels is None or not len(labels):
        return None
    if task.kind == OUTPUTS:
        if labels.dim() == 3:
            raise InputError(f"the calibration labels are per pixel {tuple(labels.shape[1:])} but the model's output "
                             f"is not one per-pixel class map (outputs: {_shapes_text(task)}); pass labels that fit "
                             "or none")
        return (f"the calibration labels were not used for accuracy: the model has {_shapes_text(task)}, not one "
                "(N, classes) or (N, classes, H, W) output; its outputs were compared with the original's")
    if task.kind == CLASSIFICATION and labels.dim() != 1:
        raise InputError(f"the calibration labels have shape {tuple(labels.shape)} but the model classifies whole "
                         f"images (output {_shapes_text(task)}); pass one class index per sample")
    if task.kind == SEGMENTATION:
        hw = task.shapes[0][1:]
        if labels.dim() != 3:
            raise InputError(f"the calibration labels are one per sample but the model's output is per pixel "
                             f"{_shapes_text(task)}; pass labels of shape (N, {hw[0]}, {hw[1]}) (one class per "
                             "pixel) or none")
        if tuple(labels.shape[1:]) != hw:
            raise InputError(f"the calibration labels are {labels.shape[1]}x{labels.shape[2]} per sample but the "
                             f"model's class maps are {hw[0]}x{hw[1]}; pass labels at the output's resolution")
    top = int(labels.max())
    if top >= (task.classes or 0):
        where = "output channels" if task.kind == SEGMENTATION else "outputs"
        raise InputError(f"calibration labels go up to {top} but the model has {task.classes} {where}; labels are "
                         "class indices from 0 to the number of classes - 1")
    return None


def _shapes_text(task: Task) -> str:
    return ", ".join(f"{n} (N, {', '.join(map(str, s))})" for n, s in zip(task.names[:6], task.shapes[:6]))


def predictions(outputs: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """The class per sample (classification) or per pixel (segmentation) of one output."""
    t = outputs[0][1]
    if t.dim() == 4 and t.shape[2] * t.shape[3] == 1:   # (N, C, 1, 1): a classifier without the flatten
        return t.flatten(1).argmax(1)
    return t.argmax(1)


def evaluate(original, final, x: torch.Tensor, labels: torch.Tensor | None, task: Task,
             reference: list | None = None) -> dict:
    """The accuracy section of the report (without `data`, `samples`, `labels_from`, which the caller adds).

    `labels` are the data's own labels (None when there are none: the original's outputs are the reference).
    `reference`: the original's outputs per batch (`reference_outputs`), when they were kept, so a model compared
    again and again (the accuracy guard, each round) costs one forward pass instead of two.
    """
    with torch.no_grad():
        acc = _ACCUMULATORS[task.kind](task, labels is not None)
        for k, i in enumerate(range(0, len(x), BATCH)):
            xb = x[i:i + BATCH]
            orig = reference[k] if reference is not None else output_tensors(original(xb))
            acc.add(orig, output_tensors(final(xb)), labels[i:i + BATCH] if labels is not None else None)
    return {"task": task.kind, **acc.result()}


def reference_outputs(original, x: torch.Tensor, max_elements: int) -> list | None:
    """The original's outputs on `x` per evaluation batch, or None when they hold more than `max_elements` values
    (per-pixel outputs of large images: recomputing them costs less than the memory)."""
    out, total = [], 0
    with torch.no_grad():
        for i in range(0, len(x), BATCH):
            outs = [(n, t.detach().clone()) for n, t in output_tensors(original(x[i:i + BATCH]))]
            total += sum(t.numel() for _, t in outs)
            if total > max_elements:
                return None
            out.append(outs)
    return out


class _Classification:
    def __init__(self, task: Task, labelled: bool):
        self.labelled = labelled
        self.n = self.agree = self.right_original = self.right_final = 0

    def add(self, orig, final, y) -> None:
        po, pf = predictions(orig), predictions(final)
        self.n += len(po)
        self.agree += int((po == pf).sum())
        if y is not None:
            self.right_original += int((po == y).sum())
            self.right_final += int((pf == y).sum())

    def result(self) -> dict:
        agree = self.agree / self.n
        out = {"agreement_with_original": agree}
        if self.labelled:
            out.update(top1_original=self.right_original / self.n, top1_final=self.right_final / self.n)
            out.update(metric="top-1", against="labels", higher_is_better=True,
                       metric_description="share of samples whose top-1 class is the label",
                       metric_original=out["top1_original"], metric_final=out["top1_final"])
        else:
            out.update(metric="agreement", against="original", higher_is_better=True,
                       metric_description="share of samples whose top-1 class is the original model's",
                       metric_final=agree)
        return out


class _Segmentation:
    def __init__(self, task: Task, labelled: bool):
        self.c, self.labelled = int(task.classes), labelled
        self.vs_original = torch.zeros(self.c, self.c, dtype=torch.int64)   # rows: original, columns: final
        self.original = torch.zeros(self.c, self.c, dtype=torch.int64)      # rows: labels, columns: original
        self.final = torch.zeros(self.c, self.c, dtype=torch.int64)

    def _confusion(self, ref: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        idx = ref.reshape(-1).long() * self.c + pred.reshape(-1).long()
        return torch.bincount(idx, minlength=self.c * self.c).reshape(self.c, self.c)

    def add(self, orig, final, y) -> None:
        po, pf = orig[0][1].argmax(1), final[0][1].argmax(1)
        self.vs_original += self._confusion(po, pf)
        if y is not None:
            self.original += self._confusion(y, po)
            self.final += self._confusion(y, pf)

    def result(self) -> dict:
        pixels = int(self.vs_original.sum())
        out = {"classes": self.c, "agreement_with_original": float(self.vs_original.diag().sum()) / pixels,
               "miou_vs_original": mean_iou(self.vs_original)}
        if self.labelled:
            out.update(miou_original=mean_iou(self.original), miou_final=mean_iou(self.final),
                       pixel_accuracy_original=float(self.original.diag().sum()) / pixels,
                       pixel_accuracy_final=float(self.final.diag().sum()) / pixels)
            out.update(metric="mIoU", against="labels", higher_is_better=True,
                       metric_description="mean IoU of the argmax class maps against the per-pixel labels, over the "
                                          "classes present in the labels or the predictions",
                       metric_original=out["miou_original"], metric_final=out["miou_final"])
        else:
            out.update(metric="mIoU", against="original", higher_is_better=True,
                       metric_description="mean IoU of the argmax class maps against the original model's, over the "
                                          "classes present in either",
                       metric_final=out["miou_vs_original"])
        out["agreement_description"] = "share of pixels whose argmax class is the original model's"
        return out


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean over classes present in the reference or the prediction of TP / (TP + FP + FN)."""
    c = confusion.double()
    tp = c.diag()
    union = c.sum(0) + c.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else 1.0


class _Outputs:
    def __init__(self, task: Task, labelled: bool):
        self.names = task.names
        k = len(task.names)
        self.sq_err = [0.0] * k
        self.sq_ref = [0.0] * k
        self.cos = [0.0] * k
        self.n = 0

    def add(self, orig, final, y) -> None:
        if [n for n, _ in orig] != [n for n, _ in final]:
            raise InputError(f"the pruned model's outputs {[n for n, _ in final][:6]} are not the original's "
                             f"{[n for n, _ in orig][:6]}")
        for i, ((_, a), (_, b)) in enumerate(zip(orig, final)):
            a = a.detach().double().reshape(a.shape[0], -1)
            b = b.detach().double().reshape(b.shape[0], -1)
            self.sq_err[i] += float(((b - a) ** 2).sum())
            self.sq_ref[i] += float((a ** 2).sum())
            na, nb = a.norm(dim=1), b.norm(dim=1)
            # two zero vectors are the same; one zero vector against another is as far as it gets
            cos = torch.where((na == 0) & (nb == 0), torch.ones_like(na),
                              (a * b).sum(1) / (na * nb).clamp_min(1e-300))
            self.cos[i] += float(cos.sum())
        self.n += len(orig[0][1])

    def result(self) -> dict:
        rows = []
        for i, name in enumerate(self.names):
            err = self.sq_err[i] ** 0.5
            ref = self.sq_ref[i] ** 0.5
            rel = err / ref if ref > 0 else (0.0 if err == 0 else None)
            cos = min(1.0, max(-1.0, self.cos[i] / self.n))   # rounding can step past +-1
            rows.append({"name": name, "rel_l2_error": rel, "cosine_similarity": cos})
        finite = [r["rel_l2_error"] for r in rows if r["rel_l2_error"] is not None]
        worst = max(rows, key=lambda r: float("inf") if r["rel_l2_error"] is None else r["rel_l2_error"])
        out = {"outputs": rows, "metric": "rel. L2 error", "against": "original", "higher_is_better": False,
               "metric_description": "||final - original|| / ||original|| over the calibration data, of the output "
                                     "where it is largest (every output's, with its mean per-sample cosine "
                                     "similarity, is listed under outputs)",
               "worst_output": worst["name"],
               "cosine_similarity_min": min(r["cosine_similarity"] for r in rows)}
        if worst["rel_l2_error"] is not None:
            out["metric_final"] = worst["rel_l2_error"]
        elif finite:
            out["metric_final"] = max(finite)
        return out


_ACCUMULATORS = {CLASSIFICATION: _Classification, SEGMENTATION: _Segmentation, OUTPUTS: _Outputs}
