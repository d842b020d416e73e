"""What is measured on a finished run, each result cached in the run's folder (``cache``, keyed by
its settings, data and code version): fixed, seeded test samples (``samples``), PGD curves and the
decision-based attack (``attacks``), the robustness evaluation of chapter 5 (``robustness``),
corrupted test images (``corruption``), attributions and the spurious cue (``attribution``), and
photographs from another source (``grading``).
"""
