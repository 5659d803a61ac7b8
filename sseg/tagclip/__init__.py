"""TagCLIP (Li et al., "TagCLIP: Improving Discrimination Ability of Open-Vocabulary Semantic
Segmentation"): a ZegCLIP-style decoder over a vision-language model's patch and text embeddings, trained
on *seen* classes only, with a learnable *trusty token* whose map tells where pixels belong to no seen class.

Plain PyTorch, no Ray, no MLflow. ``config`` (the model config a checkpoint stores), ``decoder`` (query
projection, trusty learner, attention-to-mask layers), ``prompts`` (deep visual prompt tuning for a CLIP
ViT), ``model`` (the segmenter and its ``segment_scores``), ``scores`` (the inference rule: seen bias and
trusty weighting), ``targets`` (seen labels and the trusty target), ``losses`` (focal + dice + trusty),
``splits`` (seen / unseen splits as data files) and ``evaluation`` (seen / unseen metrics).
"""
