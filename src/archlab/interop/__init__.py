"""Real checkpoints in and out: Hugging Face and timm models as archlab specs plus weights.

``families/`` holds one converter per family (config -> spec, tensors -> archlab's names).
"""
