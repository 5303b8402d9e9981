"""Channel removal over Torch-Pruning's dependency graph: groups (graph.py, groups.py), the structures
that need more than the graph (structures.py), removal of the channels it is given (pruner.py), the
read-only view criteria score through (view.py), and whole residual blocks (depth.py).

Imports nothing of compress.criteria or compress.search: which channels go is decided there.
"""
