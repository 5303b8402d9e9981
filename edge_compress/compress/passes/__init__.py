"""The passes of a compression run, each with its config (compress/config.py), taking the previous passes'
results and returning its own frozen result with the notes it adds to the report (never shared state):

    load     (load.py)     options and files checked, the model, the input shape and calibration data
    measure  (measure.py)  the original evaluated, the budget resolved; the final model measured
    prune    (prune.py)    channels removed to the budget, BatchNorm re-estimated
    recover  (recover.py)  fine-tuning or distillation on --train-data
    export   (export.py)   ONNX, simplified and parity-checked; the pruned PyTorch model saved
    build    (build.py)    the target's engine (ONNX Runtime, INT8, TensorRT build script)
    report   (report.py)   report.json / report.html and the run's result

`pipeline.py` sequences them; `export` and `deploy` get plain values from them, never objects of this package.
"""
