"""Adversarial attacks, one concept per module, all in [0, 1] pixel units (eps as k/255):

- ``pgd``: L-inf PGD (Madry et al.) and its targeted form, the report's success-rate experiment;
- ``adversarial_training``: the report's training objective on PGD (or FGSM-RS) examples;
- ``library``: APGD-CE, APGD-T and Square through the AutoAttack authors' code;
- ``decision``: HopSkipJump, a decision-based attack, and the perturbation sizes it finds;
- ``report_code``: the report's PGD exactly as its original code ran it.

Every attack runs the model in eval mode (``fundus_lib.models.eval_mode``) and gives each module
its mode back afterwards.
"""
