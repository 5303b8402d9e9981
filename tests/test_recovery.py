"""Recovery after pruning: distillation, fine-tuning, options, divergence, determinism, and a 2-process DDP run.

Tiny models on the procedural 8-class dataset of the built-in example; every test asserts a number.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from edge_compress.compress.search.removal import prune_to
from edge_compress.compress.archs import get_arch
from edge_compress.compress.calib import CalibData
from edge_compress.compress.criteria.registry import make_criterion
from edge_compress.compress.errors import InputError
from edge_compress.compress.example import make_dataset, to_tensor
from edge_compress.compress.pruning.pruner import ChannelPruner
from edge_compress.compress.config import RecoveryOptions, RecoveryOptionsError, flag_of
from edge_compress.compress.recovery import (
    RecoveryError,
    TrainingDataError,
    _Dist,
    _epoch_batches,
    distillation_loss,
    load_training_data,
    recover,
    resolve_mode,
)
from helpers_units import REPO

QUIET = {"progress": False, "log": lambda msg: None}
# 24 steps in all: twice the default rate, which is set for the thousands of steps of a real training set
FEW_STEPS = RecoveryOptions(epochs=3, lr=0.02)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: the numbers below then depend less on the machine's core count, and run faster
    on a shared machine than threads competing for its cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def train_xy():
    x, y = make_dataset(512, seed=3)
    return to_tensor(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def heldout_xy():
    x, y = make_dataset(384, seed=4)
    return to_tensor(x), torch.from_numpy(y)


@pytest.fixture(scope="module")
def teacher(train_xy):
    """A width-8 example CNN trained for three epochs with a plain loop (independent of the code under test)."""
    x, y = train_xy
    torch.manual_seed(0)
    model = get_arch("example-cnn").factory(width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        for idx in torch.randperm(len(x), generator=g).split(32):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _tiny(seed: int = 0, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return get_arch("example-cnn").factory(width=width).eval()


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _kd(student, teacher, x) -> float:
    return float(distillation_loss(_outputs(student, x), _outputs(teacher, x), 4.0))


def _agreement(student, teacher, x) -> float:
    return float((_outputs(student, x).argmax(1) == _outputs(teacher, x).argmax(1)).float().mean())


def _accuracy(model, x, y) -> float:
    return float((_outputs(model, x).argmax(1) == y).float().mean())


def _pruned_copy(teacher: nn.Module, x: torch.Tensor, keep: float) -> nn.Module:
    student = copy.deepcopy(teacher)
    prune_to(ChannelPruner(student, x[:2]), make_criterion("l1"), keep)
    return student.eval()


# ---- what recovery is for ------------------------------------------------------------------------

def test_distillation_recovers_a_pruned_student(teacher, train_xy):
    x, _ = train_xy
    student = _pruned_copy(teacher, x, keep=0.5)
    kd0, agree0 = _kd(student, teacher, x), _agreement(student, teacher, x)
    result = recover(student, teacher, x, FEW_STEPS, **QUIET)
    kd1, agree1 = _kd(student, teacher, x), _agreement(student, teacher, x)
    assert result.mode == "distill" and result.labels_from == "none" and result.steps == 24
    assert kd1 < 0.5 * kd0, (kd0, kd1)
    assert agree1 > agree0 + 0.2, (agree0, agree1)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_distillation_pulls_a_noisy_copy_back_to_the_teacher(teacher, train_xy):
    x, _ = train_xy
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.parameters():
            if p.ndim == 4:
                p.add_(0.7 * p.std() * torch.randn(p.shape, generator=g))
    kd0, agree0 = _kd(student, teacher, x), _agreement(student, teacher, x)
    recover(student, teacher, x, FEW_STEPS, **QUIET)
    kd1, agree1 = _kd(student, teacher, x), _agreement(student, teacher, x)
    assert kd1 < 0.5 * kd0, (kd0, kd1)
    assert agree1 > agree0 + 0.2, (agree0, agree1)


def test_finetuning_with_labels_improves_accuracy(train_xy, heldout_xy):
    student = _tiny(seed=5, width=8)
    acc0 = _accuracy(student, *heldout_xy)
    result = recover(student, None, train_xy, RecoveryOptions(epochs=3, lr=0.05, batch_size=32), **QUIET)
    acc1 = _accuracy(student, *heldout_xy)
    assert result.mode == "finetune" and result.loss == "cross-entropy with the labels"
    assert acc0 < 0.25 and acc1 > 0.4 and acc1 > acc0 + 0.2, (acc0, acc1)
    assert result.epoch_losses[2] < result.epoch_losses[0]


def test_finetuning_can_mix_in_the_teacher(teacher, train_xy):
    x, y = train_xy
    student = _pruned_copy(teacher, x, keep=0.5)
    result = recover(student, teacher, (x, y), RecoveryOptions(alpha=0.5, max_steps=4), **QUIET)
    assert result.mode == "finetune" and result.loss.startswith("0.5 x cross-entropy + 0.5 x KL")
    assert np.isfinite(result.final_loss) and result.steps == 4


# ---- mode, options and data ----------------------------------------------------------------------

def test_auto_mode_finetunes_with_labels_and_distils_without(teacher, train_xy):
    x, y = train_xy
    x, y = x[:64], y[:64]
    opts = RecoveryOptions(max_steps=1)
    assert recover(_tiny(), _tiny(1), (x, y), opts, **QUIET).mode == "finetune"
    assert recover(_tiny(), _tiny(1), CalibData(x, y, "npz", "data"), opts, **QUIET).mode == "finetune"
    assert recover(_tiny(), _tiny(1), x, opts, **QUIET).mode == "distill"
    assert recover(_tiny(), _tiny(1), CalibData(x, None, "npz", "none"), opts, **QUIET).mode == "distill"
    # the pipeline's stand-in labels are the model's own predictions: not ground truth
    pseudo = recover(_tiny(), _tiny(1), CalibData(x, y, "npz", "model predictions"), opts, **QUIET)
    assert (pseudo.mode, pseudo.labels_from) == ("distill", "model predictions")
    assert resolve_mode("auto", True) == "finetune" and resolve_mode("auto", False) == "distill"
    assert resolve_mode("distill", True) == "distill"


@pytest.mark.parametrize("mode, labels, teacher_given, alpha, words", [
    ("finetune", False, True, 0.0, "needs labelled training data"),
    ("distill", True, False, 0.0, "needs the original model as the teacher"),
    ("auto", False, False, 0.0, "needs the original model as the teacher"),
    ("finetune", True, False, 0.3, "--kd-alpha 0.3"),
])
def test_modes_the_inputs_cannot_serve_raise(train_xy, mode, labels, teacher_given, alpha, words):
    x, y = train_xy[0][:16], train_xy[1][:16]
    model = _tiny()
    before = _state(model)
    with pytest.raises(RecoveryError, match=words) as exc:
        recover(model, _tiny(1) if teacher_given else None, (x, y if labels else None),
                RecoveryOptions(mode=mode, alpha=alpha, max_steps=1), **QUIET)
    assert exc.value.exit_code == 2  # the user's to fix, like any input error
    assert _same(before, _state(model))


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", -1.0), ("epochs", float("nan")), ("epochs", float("inf")), ("epochs", "1"),
    ("lr", 0.0), ("lr", -0.1), ("lr", True), ("batch_size", 1), ("batch_size", 8.0), ("weight_decay", -1e-4),
    ("momentum", 1.0), ("momentum", -0.1), ("temperature", 0), ("alpha", 1.5), ("alpha", -0.1),
    ("mode", "train"), ("mode", None), ("device", "gpu"), ("seed", -1), ("seed", 1.5), ("num_workers", -1),
    ("max_steps", 0), ("max_steps", 2.5),
])
def test_invalid_options_raise(field, value):
    with pytest.raises(RecoveryOptionsError) as exc:
        RecoveryOptions(**{field: value})
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, InputError)
    msg = str(exc.value)
    assert field in msg and flag_of(RecoveryOptions, field) in msg and repr(value) in msg


def test_valid_options_are_kept():
    o = RecoveryOptions(epochs=0.5, lr=1e-3, batch_size=2, momentum=0.0, alpha=1.0, mode="distill", device="cpu",
                        max_steps=np.int64(7))
    assert o.to_dict()["epochs"] == 0.5 and o.max_steps == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_raises(train_xy):
    with pytest.raises(RecoveryOptionsError, match="sees no CUDA GPU"):
        recover(_tiny(), _tiny(1), train_xy[0][:8], RecoveryOptions(device="cuda", max_steps=1), **QUIET)


def test_bad_labels_and_inputs_raise_before_training(train_xy):
    x, y = train_xy[0][:16], train_xy[1][:16]
    model = _tiny()
    before = _state(model)
    wrong = y.clone()
    wrong[0] = 9
    with pytest.raises(RecoveryError, match=r"labels range over \[\d, 9\], but the model has 8 outputs"):
        recover(model, None, (x, wrong), RecoveryOptions(max_steps=1), **QUIET)
    bad = x.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(RecoveryError, match="NaN or Inf"):
        recover(model, _tiny(1), bad, RecoveryOptions(max_steps=1), **QUIET)
    with pytest.raises(RecoveryError, match="at least 2 samples"):
        recover(model, _tiny(1), x[:1], RecoveryOptions(max_steps=1), **QUIET)
    assert _same(before, _state(model))


def test_load_training_data_reads_the_calibration_formats(tmp_path):
    images, labels = make_dataset(40, seed=9, size=8)
    path = tmp_path / "calibration-set.npz"  # the word must survive the message rewrite below
    np.savez(path, x=images, y=labels)
    data = load_training_data(path, (3, 8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert data.x.shape == (40, 3, 8, 8) and data.labels_from == "data" and torch.equal(data.y, torch.from_numpy(labels))
    assert abs(float(data.x[0, 0, 0, 0]) - (images[0, 0, 0, 0] / 255 - 0.5) / 0.25) < 1e-5
    assert len(load_training_data(path, (3, 8, 8), samples=10)) == 10
    with pytest.raises(TrainingDataError) as exc:
        load_training_data(path, (3, 16, 16))
    msg = str(exc.value)
    assert msg.startswith(f"training data {path} has shape") and "calibration-set.npz" in msg
    with pytest.raises(TrainingDataError, match="--train-samples must be >= 1"):
        load_training_data(path, (3, 8, 8), samples=0)
    with pytest.raises(TrainingDataError, match="^training data .*missing.npz does not exist"):
        load_training_data(tmp_path / "missing.npz", (3, 8, 8))


# ---- safety: divergence, determinism, what is and is not touched ---------------------------------

def test_a_nan_loss_raises_and_leaves_the_model_unchanged(teacher, train_xy):
    student = _pruned_copy(teacher, train_xy[0], keep=0.5)
    before = _state(student)
    with pytest.raises(RecoveryError, match=r"the loss became NaN at step \d+ of 4; lower the learning rate "
                                           r"\(--lr 1e\+12\); the model was left unchanged"):
        recover(student, teacher, train_xy[0][:256], RecoveryOptions(lr=1e12), **QUIET)
    assert _same(before, _state(student)) and not student.training


class _Overflowing(nn.Module):
    """Finite outputs, but a buffer that overflows in train mode: what a diverging BatchNorm can do."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8))
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x):
        if self.training:
            self.scale *= 1e30
        return self.body(x)


def test_non_finite_weights_with_a_finite_loss_raise_too(train_xy):
    model = _Overflowing().eval()
    before = _state(model)
    with pytest.raises(RecoveryError, match=r"1 tensors \(e.g. scale\) became non-finite during training"):
        recover(model, copy.deepcopy(model), train_xy[0][:64], RecoveryOptions(batch_size=16), **QUIET)
    assert _same(before, _state(model))


def test_the_same_seed_gives_the_same_weights(train_xy):
    x = train_xy[0][:96]
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        student = _tiny()
        recover(student, _tiny(1), x, RecoveryOptions(batch_size=16, seed=seed), **QUIET)
        runs[name] = _state(student)
    assert _same(runs["a"], runs["b"])
    assert not _same(runs["a"], runs["c"])  # the seed orders the batches


def test_batchnorm_statistics_train_and_the_teacher_stays_frozen(teacher, train_xy):
    x = train_xy[0][:128]
    student = _pruned_copy(teacher, x, keep=0.5)
    teacher_before, student_before = _state(teacher), _state(student)
    recover(student, teacher, x, RecoveryOptions(epochs=2, max_steps=3), **QUIET)  # 2 steps an epoch
    after = _state(student)
    bn = [k for k in after if k.endswith("running_mean")]
    assert bn and all(not torch.equal(after[k], student_before[k]) for k in bn)
    assert all(int(after[k.replace("running_mean", "num_batches_tracked")]) ==
               int(student_before[k.replace("running_mean", "num_batches_tracked")]) + 3 for k in bn)
    assert _same(teacher_before, _state(teacher)) and not teacher.training and not student.training
    assert all(p.requires_grad for p in teacher.parameters())  # the frozen copy is the trainer's, not the caller's


def test_data_loader_workers_give_the_same_weights(train_xy):
    x = train_xy[0][:64]
    runs = []
    for workers in (0, 1):
        student = _tiny()
        recover(student, _tiny(1), x, RecoveryOptions(batch_size=16, num_workers=workers), **QUIET)
        runs.append(_state(student))
    assert _same(*runs)


def test_the_caller_s_global_rng_is_left_alone(train_xy):
    student, teacher = _tiny(), _tiny(1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    recover(student, teacher, train_xy[0][:32], RecoveryOptions(max_steps=2), **QUIET)
    assert torch.equal(torch.rand(3), expected)


# ---- steps, shards, losses, result ---------------------------------------------------------------

@pytest.mark.parametrize("epochs, max_steps, steps, n_losses", [
    (1, None, 8, 1), (0.5, None, 4, 1), (1.5, None, 12, 2), (3, 5, 5, 1), (2, 10, 10, 2),
])
def test_epochs_and_max_steps_set_the_number_of_steps(train_xy, epochs, max_steps, steps, n_losses):
    result = recover(_tiny(), _tiny(1), train_xy[0][:64], RecoveryOptions(epochs=epochs, batch_size=8,
                                                                         max_steps=max_steps), **QUIET)
    assert result.steps == steps and len(result.epoch_losses) == n_losses
    assert result.epochs == steps / 8 and result.final_loss == result.epoch_losses[-1]


def test_a_last_batch_of_one_is_dropped(train_xy):
    result = recover(_tiny(), _tiny(1), train_xy[0][:17], RecoveryOptions(batch_size=8), **QUIET)
    assert result.steps == 2  # 8 + 8, not a third batch of one sample that BatchNorm cannot train on


@pytest.mark.parametrize("n, world, batch", [(10, 2, 3), (64, 2, 8), (11, 3, 4), (7, 2, 2), (18, 2, 4)])
def test_epoch_shards_cover_the_data_with_equal_step_counts(n, world, batch):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [_epoch_batches(order, _Dist(rank, world), batch) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # DDP needs every process to take the same number of steps
    seen = torch.cat([torch.cat(s) for s in shards])
    per_rank = -(-n // world)
    dropped = per_rank % batch == 1 and per_rank > batch  # the last batch of one, on every rank
    assert len(seen) == world * (per_rank - dropped)
    if not dropped:
        assert set(seen.tolist()) == set(range(n))
    if n % world == 0 and not dropped:
        assert len(set(seen.tolist())) == n  # disjoint shards


def test_distillation_loss_is_kl_times_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    expected = float((p * (p.log() - q.log())).sum(1).mean() * 4)
    assert abs(float(distillation_loss(s, t, 2.0)) - expected) < 1e-6
    assert float(distillation_loss(t, t, 4.0)) == 0.0


def test_the_result_is_json(train_xy):
    result = recover(_tiny(), _tiny(1), train_xy[0][:32], RecoveryOptions(batch_size=8, max_steps=3), **QUIET)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["mode"] == "distill" and d["device"] == "cpu" and d["world_size"] == 1 and d["rank"] == 0
    assert d["steps"] == 3 and d["samples"] == 32 and d["batch_size"] == 8 and d["samples_per_second"] > 0
    assert d["options"]["max_steps"] == 3 and np.isfinite(d["final_loss"]) and d["seconds"] > 0


def test_progress_and_log(train_xy, capsys):
    lines = []
    recover(_tiny(), _tiny(1), train_xy[0][:32], RecoveryOptions(epochs=2, batch_size=16), progress=False,
            log=lines.append)
    assert len(lines) == 3 and lines[0].startswith("recovery: distill") and "epoch 2/2" in lines[2]
    assert "recovery (distill)" not in capsys.readouterr().err


# ---- distributed -----------------------------------------------------------------------------------

_ENVIRONMENT_FAILURES = ("Address already in use", "connectFullMesh", "Network is unreachable",
                         "Cannot assign requested address", "Name or service not known", "Operation not permitted")


def test_ddp_two_processes_train_identical_weights(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip(f"torchrun is not installed next to {sys.executable}")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch build has no torch.distributed gloo backend")
    out = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "edge_compress.compress.recovery", "--selftest-ddp", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    if res.returncode != 0:
        reason = next((line.strip() for line in res.stderr.splitlines()
                       if any(s in line for s in _ENVIRONMENT_FAILURES)), None)
        if reason:
            pytest.skip(f"torchrun could not connect its processes on this machine: {reason}")
        pytest.fail(f"torchrun failed ({res.returncode}):\n{res.stderr[-4000:]}")
    ranks = json.loads(out.read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["backend"] for r in ranks} == {"gloo"}
    r0, r1 = ranks
    assert r0["initial"] == r1["initial"]  # each process drew its own weights; broadcast_from_rank0 unified them
    assert r0["weights"] == r1["weights"]  # shapes and sha256 of every tensor, buffers included
    assert r0["changed"] and r0["changed"] == r1["changed"]
    for r in ranks:
        res_ = r["result"]
        # 64 samples, 8 per process and step: 4 steps an epoch; 6 steps (the self-test's cap) end mid-epoch 2
        assert np.isfinite(res_["final_loss"]) and res_["steps"] == 6 and len(res_["epoch_losses"]) == 2
        assert res_["batch_size"] == 16 and res_["samples"] == 64
        assert res_["mode"] == "distill" and res_["device"] == "cpu"
    assert r0["result"]["final_loss"] == r1["result"]["final_loss"]  # averaged over the processes
    for r in ranks:  # different architectures are refused by every process, not left to hang or crash in DDP
        assert "processes [1] hold a different architecture from rank 0's" in r["mismatch_refused"]


def test_pipeline_recovers_with_train_data(tiny_model_file, calib_file, tmp_path, capsys):
    """--train-data runs recovery after pruning and records it in the report."""
    import json

    from edge_compress.compress.cli import main

    out = tmp_path / "out"
    code = main(["--target", "host", "--arch", "example-cnn", "--arch-kwargs", '{"width": 8}', "--calib", str(calib_file),
                 "--macs", "60%", "--train-data", str(calib_file), "--epochs", "1", "--train-batch-size", "32",
                 "--out", str(out), str(tiny_model_file)])
    _, err = capsys.readouterr()
    assert code == 0, err
    rec = json.loads((out / "report.json").read_text())["pruning"]["recovery"]
    assert rec["mode"] == "finetune" and rec["steps"] == 3 and rec["final_loss"] == rec["final_loss"]  # finite
