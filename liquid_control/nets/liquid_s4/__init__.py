"""Liquid-S4, in one place: the torch module and its equations (`module.py`), its streaming step
(`stream.py`) and its training kernel (`train.py`). Nothing is imported here, so the streaming step
loads without torch."""
