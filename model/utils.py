"""Kept for code written against the original repository (`from model.utils import load_matched_state_dict`)."""
from .checkpoint import load_matched_state_dict

__all__ = ['load_matched_state_dict']
