"""Training: the loop every chapter uses (``loop``), its losses (``losses``), the resampling of the
training set (``sampling``: oversampling, SMOTE) and how a grade is read out of the model's class
probabilities (``readout``).
"""
