"""Tuning-free mask classification (TUSS: DBA-CLIP + GLCC), plain PyTorch.

Class-agnostic masks (``masks``) are embedded by a frozen vision-language model (``embed``: MaskCLIP pooling,
DBA's mask-biased last block ``clip_dba``, or S-Seg's own pool-then-project path), given soft labels by the
supervision at hand (``supervision``), classified by the cosine probe (``probe``) and label propagation on a
kNN graph (``propagation``) bootstrapping each other (``glcc``), and painted back into label maps (``paint``).
"""
