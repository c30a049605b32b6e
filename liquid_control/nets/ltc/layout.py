"""The LTC's weight layouts (torch-free): the streaming step's arrays, by column, and the training
kernel's table over the flat parameter vector p."""

from __future__ import annotations

# LTC arrays, by column (`ltc_step` takes them as 2-D float64 arrays, not one table):
#   neuron, one row per neuron:        _N_CM, _N_GLEAK (both made positive), _N_VLEAK
#   syn_s / syn, one row per synapse:  _SYN_SRC, _SYN_DEST (indices), _SYN_W (made positive, masked),
#                                      _SYN_MU, _SYN_SIGMA, _SYN_EREV
#   io (by input) / out_map (by motor neuron), two rows:  _MAP_W, _MAP_B (the affine mapping)
_N_CM, _N_GLEAK, _N_VLEAK = range(3)
_SYN_SRC, _SYN_DEST, _SYN_W, _SYN_MU, _SYN_SIGMA, _SYN_EREV = range(6)
_SYN_LEN = 6
_MAP_W, _MAP_B = range(2)

# Table (int64). p holds, from the offsets: cm, gleak (both positive), vleak (n each); the synapses
# as four rows of their count (w positive and masked, sigma, mu, erev); the sensory synapses
# likewise; input_w, input_b (ones and zeros without a mapping); the LSTM's weights when mixed.
# Stored per step (lanes innermost, as for the CfC): v before each unfold (V: unfolds x n), each
# unfold's reciprocal denominator (DEN: unfolds x n), each synapse's sigmoid per unfold
# (SIGR: unfolds x synapses), the sensory sigmoids (SIGS: sensory synapses).
_L_N, _L_IN, _L_SYN, _L_SSYN, _L_UNFOLDS, _L_NEURON, _L_OSYN, _L_OSSYN, _L_IO, _L_MIXED, _L_LSTM = range(11)
_L_LEN = 11
