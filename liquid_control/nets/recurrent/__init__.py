"""The LSTM and GRU baselines: the torch module (`module.py`) and their streaming steps
(`stream.py`). Nothing is imported here, so the streaming steps load without torch."""
