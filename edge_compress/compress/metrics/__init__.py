"""Information metrics for channel pruning: pure tensor functions (the estimators and the methods built on them).

`renyi` holds the matrix-based Renyi estimators (pure tensor functions); `cmi`, `mipp`, `mi_gradient`
and `capacity` are the methods of ../shared/reference/ALGORITHMS.md sections 2-5; `features` captures a
model's per-channel activations. This package imports nothing of compress.pruning, .criteria or .search.
"""
