"""The CfC's weight layout, one for both kernels (torch-free): the int64 table that tells the
streaming step (`stream.cfc_step`) and the training kernels (`train.py`) the network's shape and
where each weight block starts in the flat float64 parameter vector p, and `pack`, which builds the
table and p from a CfC module, with numpy blocks for streaming or autograd-tracked tensors for
training (whatever `add` keeps).

Offset 0 of p is a dummy, so an offset 0 means "none". An exported model carries this table
(`FusedCfC.to_arrays`): the slots below keep their places, and the training kernels' own slots sit in
what older exports left zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ..kernels import _JIT, ACT_IDS, MODE_IDS

# The CfC table: int64 slots that tell `cfc_step` the network's shape and where each weight block
# starts in the flat float64 parameter vector p (offset 0 of p is a dummy, so an offset 0 means
# "none"). Three parts, in this order:
#
#   header, _HEADER_LEN slots at 0:
#     _H_LAYERS     layers (1 unless wired; wired: one per wiring layer, motor last)
#     _H_MODE       MODE_IDS[mode]
#     _H_MIXED      1 when a mixed-memory LSTM runs before the cell
#     _H_BACKBONE   backbone Linear layers (0: none; never when wired)
#     _H_ACT        ACT_IDS[backbone activation]
#     _H_PROJ       projection size (0: no projection, the output is the last layer's neurons)
#     _H_IN         input size
#     _H_STATE      state size (all neurons, without the LSTM's c)
#     _H_MAX_ROWS   most rows of one matvec (training: the head buffer)
#     _H_GLEN       (training) head values stored per step
#     _H_BBLEN      (training) backbone pre-activations and activations stored per step
#     11            spare, zero
#     _H_PROJ_B     offset of the projection bias (fc.bias)
#     _H_PROJ_W     offset of the projection weight (fc.weight, proj x units)
#     _H_MAX_COLS   longest layer input: where the work buffer splits into z and g
#     _H_LSTM       offset of the LSTM weights (the block `_lstm_update` reads)
#   one row per layer, _ROW_LEN slots at _HEADER_LEN + layer * _ROW_LEN:
#     _ROW_IN       the layer's input width (x for the first layer, the previous layer after)
#     _ROW_UNITS    its neurons
#     _ROW_STATE    where its neurons sit in the state vector
#     _ROW_W        offset of its heads' weights, concatenated (units or 4 units x cols)
#     _ROW_B        offset of their biases
#     _ROW_TAU      (pure mode) offset of w_tau
#     _ROW_A        (pure mode) offset of A
#     _ROW_G        (training) where the layer's head values start in a step's record
#                   (f1, f2, s, time_a; pure: a1, e)
#   one record per backbone Linear, _BACKBONE_LEN slots each, after the last layer row:
#     _BB_W, _BB_B  offsets of its weight (rows x cols) and bias
#     _BB_ROWS      out_features
#     _BB_COLS      in_features
#   (training stores each backbone layer's pre-activations, then its activations, in that order:
#   `_bb_off` says where layer k's start)
_H_LAYERS, _H_MODE, _H_MIXED, _H_BACKBONE, _H_ACT, _H_PROJ, _H_IN, _H_STATE = range(8)
_H_PROJ_B, _H_PROJ_W, _H_MAX_COLS, _H_LSTM = range(12, 16)
_HEADER_LEN = 16
_ROW_IN, _ROW_UNITS, _ROW_STATE, _ROW_W, _ROW_B, _ROW_TAU, _ROW_A = range(7)
_ROW_LEN = 8
_BB_W, _BB_B, _BB_ROWS, _BB_COLS = range(4)
_BACKBONE_LEN = 4
_BACKBONE_ROOM = 8  # backbone records the table has room for before it must grow
_H_MAX_ROWS, _H_GLEN, _H_BBLEN = range(8, 11)
_ROW_G = 7


@numba.njit(inline="always", **_JIT)
def _bb_off(tb, n_layers, k):
    """Where backbone layer k's values start in a training step's record (after every earlier
    layer's pre-activations and activations)."""
    base = _HEADER_LEN + n_layers * _ROW_LEN
    off = 0
    for j in range(k):
        off += 2 * tb[base + j * _BACKBONE_LEN + _BB_ROWS]
    return off


def cells(cfc) -> list:
    """The CfC's layers: one cell, or a wired CfC's layer cells (motor last)."""
    return list(cfc.rnn_cell._layers) if cfc.wired else [cfc.rnn_cell]


def backbone_linears(cfc) -> list:
    """The Linear layers of a fully connected CfC's backbone (none when wired or without one)."""
    if cfc.wired or cfc.rnn_cell.backbone is None:
        return []
    return [m for m in cfc.rnn_cell.backbone if type(m).__name__ == "Linear"]


def pack(cfc, add: Callable[[Any], int], projection: bool = True) -> tuple[np.ndarray, dict]:
    """The table for `cfc` (a torch module: torch is imported here, not with this module), its
    blocks handed to `add` in order, which returns each block's offset in p. Returns the table and
    the sizes the kernels' buffers need: max_cols, max_rows, glen, bblen. Without `projection` the
    projection (fc) is left out: the training kernel returns states, and torch projects them."""
    from torch import cat

    layers = cells(cfc)
    linears = backbone_linears(cfc)
    table = np.zeros(_HEADER_LEN + len(layers) * _ROW_LEN + _BACKBONE_ROOM * _BACKBONE_LEN, dtype=np.int64)
    table[_H_LAYERS] = len(layers)
    table[_H_MODE] = MODE_IDS[cfc.mode]
    table[_H_MIXED] = int(cfc.use_mixed)
    table[_H_IN] = cfc.input_size
    table[_H_STATE] = cfc.state_size
    max_cols, max_rows, glen = 1, 1, 0
    in_dim, s_off = cfc.input_size, 0
    for index, c in enumerate(layers):
        row = _HEADER_LEN + index * _ROW_LEN
        units = c.hidden_size
        mask = None if c.sparsity_mask is None else c.sparsity_mask.double()

        def masked(layer, mask=mask):
            w = layer.weight.double()
            return w if mask is None else w * mask

        if c.mode == "pure":
            w, bias = masked(c.ff1), c.ff1.bias.double()
        else:
            # ncps masks the two value heads; the time gates stay dense.
            w = cat([masked(c.ff1), masked(c.ff2), c.time_a.weight.double(), c.time_b.weight.double()])
            bias = cat([c.ff1.bias.double(), c.ff2.bias.double(), c.time_a.bias.double(), c.time_b.bias.double()])
        table[row + _ROW_IN] = in_dim
        table[row + _ROW_UNITS] = units
        table[row + _ROW_STATE] = s_off
        table[row + _ROW_W] = add(w)
        table[row + _ROW_B] = add(bias)
        if c.mode == "pure":
            table[row + _ROW_TAU] = add(c.w_tau.double())
            table[row + _ROW_A] = add(c.A.double())
        table[row + _ROW_G] = glen
        glen += 4 * units
        max_cols = max(max_cols, in_dim + units, w.shape[1])
        max_rows = max(max_rows, w.shape[0])
        in_dim, s_off = units, s_off + units
    bblen = 0
    if linears:
        table[_H_BACKBONE] = len(linears)
        table[_H_ACT] = ACT_IDS[cfc.rnn_cell.backbone_activation]
        needed = _HEADER_LEN + len(layers) * _ROW_LEN + _BACKBONE_LEN * len(linears)
        if table.size < needed:
            table = np.concatenate([table, np.zeros(needed - table.size, dtype=np.int64)])
    for k, lin in enumerate(linears):
        rec = _HEADER_LEN + len(layers) * _ROW_LEN + k * _BACKBONE_LEN
        table[rec + _BB_W] = add(lin.weight.double())
        table[rec + _BB_B] = add(lin.bias.double())
        table[rec + _BB_ROWS] = lin.out_features
        table[rec + _BB_COLS] = lin.in_features
        bblen += 2 * lin.out_features
        max_cols = max(max_cols, lin.in_features, lin.out_features)
        max_rows = max(max_rows, lin.out_features)
    if projection and cfc.proj_size is not None:
        table[_H_PROJ] = cfc.proj_size
        table[_H_PROJ_W] = add(cfc.fc.weight.double())
        table[_H_PROJ_B] = add(cfc.fc.bias.double())
    if cfc.use_mixed:
        table[_H_LSTM] = add(cfc.lstm.input_map.weight.double())
        add(cfc.lstm.input_map.bias.double())
        add(cfc.lstm.recurrent_map.weight.double())
    table[_H_MAX_COLS] = max_cols
    table[_H_MAX_ROWS] = max_rows
    table[_H_GLEN] = glen
    table[_H_BBLEN] = bblen
    return table, {"max_cols": max_cols, "max_rows": max_rows, "glen": glen, "bblen": bblen}
