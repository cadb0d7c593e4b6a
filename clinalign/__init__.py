"""clinalign: align a language model with your own clinicians, safely and auditably."""

__version__ = "0.1.0"
