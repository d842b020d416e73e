"""fundus_lib: a thin helper package for the fundus-robustness book."""
