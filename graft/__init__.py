"""Graft: fine-tune, tune and serve pretrained models on Ray, from one declarative resource."""

__version__ = "0.1.0"
