"""The CfC, in one place: the torch module (`module.py`), its weight layout (`layout.py`), its
streaming step (`stream.py`) and its training kernel (`train.py`). Nothing is imported here, so the
streaming step loads without torch."""
