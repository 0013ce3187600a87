"""Dense bit packing of integer codes and exact byte accounting.

Codes are stored *unsigned* (``code - qmin``), little-endian within each byte: two int4
per byte, four int2 per byte, one int8 per byte. Int3 and int6 are not stored in a wider
container: they are written as a dense bit stream (8 int3 in 3 bytes, 4 int6 in 3 bytes),
so ``stored bytes == ceil(n * bits / 8)`` holds for every width and the reported size is
the size on disk.
"""

from __future__ import annotations

import math

import torch

from .errors import QuantError


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits occupy after :func:`pack`."""
    return math.ceil(n * bits / 8)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned integer codes (each < 2**bits) into a flat uint8 tensor."""
    if not 1 <= bits <= 8:
        raise QuantError(f"cannot pack {bits}-bit codes")
    u = codes.reshape(-1).to(torch.int32)
    if u.numel() and (int(u.min()) < 0 or int(u.max()) >= 2**bits):
        raise QuantError(f"codes out of range for {bits}-bit packing")
    n = u.numel()
    if bits == 8:
        return u.to(torch.uint8)
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-n) % per
        u = torch.cat([u, u.new_zeros(pad)]).view(-1, per)
        shifts = torch.arange(per, dtype=torch.int32) * bits
        return (u << shifts).sum(dim=1).to(torch.uint8)
    # dense bit stream for widths that do not divide 8 (3, 5, 6, 7)
    bit_idx = torch.arange(bits, dtype=torch.int32)
    stream = ((u.unsqueeze(1) >> bit_idx) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int32)).sum(dim=1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: the first ``n`` codes as an int32 tensor."""
    p = packed.reshape(-1).to(torch.int32)
    if p.numel() != packed_nbytes(n, bits):
        raise QuantError(f"packed buffer has {p.numel()} bytes, expected {packed_nbytes(n, bits)}")
    if bits == 8:
        return p[:n]
    if 8 % bits == 0:
        per = 8 // bits
        shifts = torch.arange(per, dtype=torch.int32) * bits
        return ((p.unsqueeze(1) >> shifts) & (2**bits - 1)).reshape(-1)[:n]
    stream = ((p.unsqueeze(1) >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)
    stream = stream[: n * bits].view(n, bits)
    return (stream << torch.arange(bits, dtype=torch.int32)).sum(dim=1)


# -- sparse position encodings (zero suppression) ------------------------------------------
#
# A zero-suppressed tensor stores values only where a boolean mask is set; the mask itself
# is stored in whichever of three encodings is smallest for it (measured, not estimated):
#   bitmask : one bit per element                       -> ceil(n / 8) bytes
#   csr     : uint16 column index per kept value + int32 row pointers -> 2*nnz + 4*(rows+1)
#   rle     : the gap before each kept value as uint8, 255 meaning "+255, continue"
#             (needs no row structure)                  -> nnz + sum(gap // 255)
SPARSE_ENCODINGS = ("bitmask", "csr", "rle")


def encode_mask(mask: torch.Tensor, encoding: str) -> torch.Tensor:
    """Encode a 2-D boolean mask ``(rows, cols)`` as uint8 bytes."""
    m = mask.reshape(mask.shape[0], -1).bool()
    if encoding == "bitmask":
        return pack(m.reshape(-1).to(torch.int32), 1)
    if encoding == "csr":
        if m.shape[1] > 65536:
            raise QuantError("csr encoding needs at most 65536 columns")
        cols = m.nonzero()[:, 1].to(torch.int32)
        counts = m.sum(dim=1).to(torch.int64)
        ptr = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)
        col_bytes = cols.to(torch.int16).view(torch.uint8) if cols.numel() else torch.zeros(0, dtype=torch.uint8)
        return torch.cat([ptr.view(torch.uint8), col_bytes])
    if encoding == "rle":
        pos = m.reshape(-1).nonzero().reshape(-1).to(torch.int64)
        if pos.numel() == 0:
            return torch.zeros(0, dtype=torch.uint8)
        gaps = torch.diff(pos, prepend=torch.tensor([-1])) - 1
        escapes = gaps // 255
        out_len = int(escapes.sum()) + pos.numel()
        # each kept value contributes `escapes` bytes of 255 followed by the remainder
        ends = torch.cumsum(escapes + 1, 0) - 1
        out = torch.full((out_len,), 255, dtype=torch.uint8)
        out[ends] = (gaps % 255).to(torch.uint8)
        return out
    raise QuantError(f"unknown sparse encoding {encoding!r}")


def decode_mask(data: torch.Tensor, encoding: str, shape: tuple[int, int], nnz: int) -> torch.Tensor:
    """Inverse of :func:`encode_mask`."""
    rows, cols = shape
    if encoding == "bitmask":
        return unpack(data, 1, rows * cols).bool().view(rows, cols)
    if encoding == "csr":
        ptr = data[: 4 * (rows + 1)].view(torch.int32).to(torch.int64)
        col = data[4 * (rows + 1):].view(torch.int16).to(torch.int64) & 0xFFFF
        row = torch.repeat_interleave(torch.arange(rows), ptr[1:] - ptr[:-1])
        mask = torch.zeros(rows, cols, dtype=torch.bool)
        mask[row, col] = True
        return mask
    if encoding == "rle":
        mask = torch.zeros(rows * cols, dtype=torch.bool)
        if nnz:
            b = data.to(torch.int64)
            ends = (b != 255).nonzero().reshape(-1)
            csum = torch.cumsum(b, 0)
            # gap before value i = sum of its bytes (255 * escapes + remainder)
            totals = csum[ends] - torch.cat([torch.zeros(1, dtype=torch.int64), csum[ends[:-1]]])
            pos = torch.cumsum(totals + 1, 0) - 1
            mask[pos] = True
        return mask.view(rows, cols)
    raise QuantError(f"unknown sparse encoding {encoding!r}")


def smallest_mask_encoding(mask: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Encode ``mask`` in every encoding and keep the smallest (ties: bitmask, csr, rle)."""
    best: tuple[str, torch.Tensor] | None = None
    for enc in SPARSE_ENCODINGS:
        if enc == "csr" and mask.reshape(mask.shape[0], -1).shape[1] > 65536:
            continue
        data = encode_mask(mask, enc)
        if best is None or data.numel() < best[1].numel():
            best = (enc, data)
    assert best is not None
    return best
