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
