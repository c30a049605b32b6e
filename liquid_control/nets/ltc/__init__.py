"""The LTC, in one place: the torch module (`module.py`), its weight layouts (`layout.py`), its
streaming step (`stream.py`) and its training kernel (`train.py`). Nothing is imported here, so the
streaming step loads without torch."""
