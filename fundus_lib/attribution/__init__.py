"""Attributions (the report's section 5): ``methods`` (integrated gradients, saliency, SmoothGrad,
Grad-CAM through captum; the per-pixel map and its overlay), ``scores`` (against lesion masks, and
the model-free reference maps every method must beat) and ``sanity`` (Adebayo et al.'s
randomisation checks). Whether a method passes is judged in ``fundus_lib.statistics``.
"""
