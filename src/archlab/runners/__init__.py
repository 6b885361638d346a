"""Training and evaluation: data sources, cross-validation splits, mixup / CutMix, the training
loop and its checkpoints, all recorded in the registry. ``arch train`` and ``arch eval`` drive it.
"""
