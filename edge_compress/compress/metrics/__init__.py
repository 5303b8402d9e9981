"""Information metrics for channel pruning: the estimator library and the four methods built on it.

`renyi` holds the matrix-based Renyi estimators (pure tensor functions); `cmi`, `mipp`, `mi_gradient`
and `capacity` are the methods of ../shared/reference/ALGORITHMS.md sections 2-5; `features` captures a
model's per-channel activations. This package does not depend on the pruning pipeline.
"""
