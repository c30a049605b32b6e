"""Pictures: the road texture as PNG (`png.py`, standard library only), and the plots and the wiring
diagram with matplotlib, headless (`plot.py`, `wiring.py`)."""
