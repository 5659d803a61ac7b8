"""SemiVL (Hümmer et al., "SemiVL: Semi-Supervised Semantic Segmentation with Vision-Language Guidance"):
semi-supervised segmentation guided by a vision-language model.

Plain PyTorch, no Ray, no MLflow. ``vlm`` (the vision-language model interface and its two adapters),
``decoder`` (language-guided decoder, DeepLabV3+ head), ``model`` (the segmenter), ``losses``
(UniMatch consistency + dense VL guidance), ``augment`` (strong views, CutMix), ``concepts`` (class
definitions), ``splits`` (labelled / unlabelled split files), ``step`` (the training step).
See docs/architecture.md.
"""
