"""From model logits to what buscad hands a user, shared by training, evaluation and inference.

``probability`` (logits → lesion probability, class probabilities, thresholded mask: one definition),
``refine`` (prediction refining with flags and reasons), ``settings`` (the thresholds, ``EvalConfig``),
``descriptors`` (BI-RADS-style lesion descriptors from a mask and the image), ``regions`` (the box of a
mask's lesion pixels, so per-component work skips the background).
Depends on nothing above ``buscad``'s constants, so evaluation and inference both use it without
importing each other.
"""
