"""Published latencies that the cost models of targets not measurable from here are fitted to: one table
per target, with its source, the factors it frees and the networks it holds out.

Jetson Nano: TensorRT FP16 ResNet-18/34/50 (three numbers, three free factors); Raspberry Pi 4 and 5:
ONNX Runtime CPU latencies of three networks with two free factors, two more networks held out.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

NANO_FREE = ("compute_efficiency", "kind_efficiency.conv_1x1", "network_overhead_ms")
# NVIDIA-AI-IOT/torch2trt docs/benchmarks/jetson_nano.md: TensorRT FP16, batch 1, 224x224, MAXN.
NANO_PUBLISHED_MS = {"resnet18": 11.4, "resnet34": 20.2, "resnet50": 29.8}
NANO_SOURCE = "torch2trt docs/benchmarks/jetson_nano.md (TensorRT FP16, batch 1, 224x224, MAXN)"
NANO_NOTES = (
    "3 numbers, 3 free factors: on the fit points this is a consistency check, not a validation.",
    "layer_overhead_ms is held at 0: three network latencies cannot tell it from network_overhead_ms.",
    "Fitting it instead of network_overhead_ms pins compute_efficiency at its bound 1 (ResNet-18 -> 34",
    "is 1.77x the time for 2.02x the MACs) and does worse out of sample (AlexNet -21 %, VGG-16 -2 %);",
    "with network_overhead_ms: VGG-16 +8 %, AlexNet -9 % (benchmarks/cost_model_accuracy.py). The",
    "2.6 ms per call is plausible for torch2trt's timing from Python with a CUDA sync on the Nano's CPU;",
    "a bare trtexec run likely pays less. memory_efficiency is not fitted (no ResNet layer is memory-bound).",
)


# Raspberry Pi 4 / 5: ONNX Runtime CPU EP, FP32, default session options (one thread per core: 4),
# timm models (ShuffleNetV2: torchvision) exported with torch.onnx.export, batch 1, 1x3x224x224, mean of
# 10 runs after 1 warm-up (timed with time.time()); names as the benchmark spells them.
_ISPC = ("ispcojp/ai_inference_device_benchmark {file} (commit 47c6e00, 2025-02-25; script "
         "classification/benchmark_ort.py): ONNX Runtime CPU EP, FP32, default session options (4 threads), "
         "batch 1, 1x3x224x224, mean of 10 runs after 1 warm-up")
RPI4_SOURCE = _ISPC.format(file="results/RPi4.md")
RPI5_SOURCE = _ISPC.format(file="results/RPi5.md")
RPI4_PUBLISHED_MS = {"resnet18": 274.989, "mobilenetv2_100": 103.894, "vgg13": 1738.197}
RPI4_HELD_OUT_MS = {"shufflenet_v2_x1_0": 40.200, "mobilenetv2_050": 46.726}
RPI5_PUBLISHED_MS = {"resnet18": 50.285, "mobilenetv2_100": 30.221, "vgg13": 421.593}
RPI5_HELD_OUT_MS = {"shufflenet_v2_x1_0": 9.432, "mobilenetv2_050": 13.970}
RPI_FREE = ("compute_efficiency", "kind_efficiency.depthwise")
# Published network name -> (registered architecture, keyword arguments); other names are registered
# architectures themselves.
PUBLISHED_NETWORKS = {"mobilenetv2_100": ("mobilenet_v2", {}),
                      "mobilenetv2_050": ("mobilenet_v2", {"width_mult": 0.5})}
RPI_NOTES = (
    "Fitted to ONNX Runtime CPU at 4 threads (see fit.data); another runtime, thread count or ORT",
    "version needs its own fit. 3 networks, 2 free factors: compute_efficiency (dense convs, which",
    "dominate ResNet-18 and VGG-13) and kind_efficiency.depthwise: until onnxruntime PR #26688",
    "(Dec 2025) ORT ran FP32 depthwise convs on ARM64 as Im2Col + SGEMM with K=9, far below the dense",
    "rate; a newer ORT is likely faster on MobileNets. conv_1x1 layers use compute_efficiency.",
    "Kept out of the fit: ShuffleNetV2 x1.0 and MobileNetV2-0.5 (fit.out_of_sample). The factor pair",
    "was chosen with the ShuffleNetV2 error in view; MobileNetV2-0.5 was checked only afterwards.",
    "Tried as the second factor: kind_efficiency.conv_1x1 fits the 3 networks as well but misses",
    "MobileNetV2-0.5 by about -30 % (ShuffleNetV2 by {shufflenet_1x1}); layer_overhead_ms or",
    "network_overhead_ms overpredict ShuffleNetV2 by +98 to +165 %. Both overheads are held at 0: a cost",
    "per operator (e.g. syncing 4 threads) is not identifiable from these nets, so small nets such as",
    "CIFAR ResNet-20 (41 M MACs, far below the fitted 0.3-11 G) are extrapolated, likely too fast.",
    "memory_efficiency (0.6) and channel_alignment (1) are not fitted. The peak only scales the fitted",
    "efficiencies: predictions do not depend on it (see hardware.fp32_gflops). Layer costs: timm's",
    "mobilenetv2_100/_050 as the registered mobilenet_v2 at width_mult 1.0/0.5; vgg13 in torchvision's",
    "layout (timm's ConvMlp head has the same multiply-adds and weights).",
)
RPI4_NOTES = tuple(n.format(shufflenet_1x1="+26 %") for n in RPI_NOTES) + (
    "ResNet-18 (275 ms, slower than PyTorch's 263 ms on the same board) is no outlier of this fit: it",
    "runs at 13.2 GFLOPS, VGG-13 at 13.0. Other runtime, cross-check only: ncnn benchncnn, 4 threads,",
    "1.8 GHz: ResNet-18 123 ms, MobileNetV2 62 ms (Tencent/ncnn benchmark/README.md), 1.7-2.2x faster.",
)
RPI5_NOTES = tuple(n.format(shufflenet_1x1="+52 %") for n in RPI_NOTES) + (
    "Other runtime, cross-check only: ncnn benchncnn, 4 threads, FP16 arithmetic: ResNet-18 20 ms,",
    "MobileNetV2 10.5 ms (Tencent/ncnn benchmark/README.md), 2.5-2.9x faster than these ORT FP32 numbers.",
)


@dataclass(frozen=True)
class PublishedTable:
    """Published latencies of one target and how its factors are fitted to them.

    `fitted_ms` are the networks the fit sees, `held_out_ms` those it must not see (their errors are the
    out-of-sample check); `start` holds factor values that the fit starts from (free factors) or keeps
    (the others)."""

    fitted_ms: dict[str, float]
    held_out_ms: dict[str, float]
    source: str
    free: tuple[str, ...]
    start: dict[str, float] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()


# Depthwise efficiency starts low: a kind whose layers are all memory-bound at the start leaves its
# efficiency unconstrained, and the fit would keep it where it started.
_RPI_START = {"layer_overhead_ms": 0.0, "network_overhead_ms": 0.0, "kind_efficiency.depthwise": 0.05}
PUBLISHED = {
    "jetson-nano": PublishedTable(NANO_PUBLISHED_MS, {}, NANO_SOURCE, NANO_FREE, {"layer_overhead_ms": 0.0},
                                  NANO_NOTES),
    "raspberry-pi-4": PublishedTable(RPI4_PUBLISHED_MS, RPI4_HELD_OUT_MS, RPI4_SOURCE, RPI_FREE, _RPI_START,
                                     RPI4_NOTES),
    "raspberry-pi-5": PublishedTable(RPI5_PUBLISHED_MS, RPI5_HELD_OUT_MS, RPI5_SOURCE, RPI_FREE, _RPI_START,
                                     RPI5_NOTES),
}


