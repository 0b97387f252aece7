"""robcurve: the measurements of *Curved Representation Space of Vision Transformers*
(Kim, Park, Kim, Lee, AAAI 2024, arXiv:2210.05742) as an adversarial-robustness benchmark.
"""

__version__ = "0.1.0"
