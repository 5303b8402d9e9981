"""Bringing a model to its budget: the budget (budget.py), the rounds of knapsack and uniform search
(rounds.py), one round's knapsack (knapsack.py) and the criterion's choice handed to the pruner
(removal.py). Imports compress.pruning and compress.criteria; neither imports this package.
"""
