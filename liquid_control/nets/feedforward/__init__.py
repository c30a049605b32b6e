"""The memoryless feedforward baseline: the torch module (`module.py`) and its streaming step
(`stream.py`). Nothing is imported here, so the streaming step loads without torch."""
