#!/usr/bin/env python3
"""A foreign Modbus TCP peer for edgegw's tests: pymodbus serving a known map.

Prints "PORT <n>" on stdout once it listens, then serves until killed.
Unit 1 answers; any other unit id gets no answer at all (a dead slave).

Map (wire addresses, 0-based), built with Python's struct module so that the
encoding is independent of edgegw's codec:
  holding 0..1    f32  123.456       CDAB (word-swapped)
  holding 2..3    i32  -123456789    ABCD
  holding 4..5    u32  3000000000    CDAB
  holding 6       u16  2534          (a profile scales it by 0.01 -> 25.34)
  holding 7       i16  -1234         (scale 0.1 -> -123.4)
  holding 10..15  string "PYMODBUS-3" NUL-padded, 2 chars per register, high byte first
  holding 100     not mapped: reading it answers exception 2 (illegal data address)
  input   0..3    f64  1234.5678     ABCD
  coils   0..7    1 0 1 1 0 0 0 1
  discrete 0..3   0 1 1 0
"""
import argparse
import asyncio
import socket
import struct
import sys

from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import ModbusTcpServer


def words(fmt, value, swap_words=False):
    b = struct.pack(fmt, value)
    w = [int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2)]
    return list(reversed(w)) if swap_words else w


def block(start, values):
    # pymodbus 3.8 adds 1 to every request address before looking it up.
    return {start + 1 + i: v for i, v in enumerate(values)}


def build_context():
    hr = {}
    hr.update(block(0, words(">f", 123.456, swap_words=True)))
    hr.update(block(2, words(">i", -123456789)))
    hr.update(block(4, words(">I", 3000000000, swap_words=True)))
    hr.update(block(6, [2534]))
    hr.update(block(7, words(">h", -1234)))
    text = b"PYMODBUS-3".ljust(12, b"\0")
    hr.update(block(10, [int.from_bytes(text[i : i + 2], "big") for i in range(0, 12, 2)]))
    # Registers 8..9 exist (as 0) so that a read bridging the gap answers, like most
    # devices; 100 does not exist at all.
    hr.update(block(8, [0, 0]))
    ir = block(0, words(">d", 1234.5678))
    co = block(0, [1, 0, 1, 1, 0, 0, 0, 1])
    di = block(0, [0, 1, 1, 0])
    slave = ModbusSlaveContext(
        hr=ModbusSparseDataBlock(hr),
        ir=ModbusSparseDataBlock(ir),
        co=ModbusSparseDataBlock(co),
        di=ModbusSparseDataBlock(di),
    )
    return ModbusServerContext(slaves={1: slave}, single=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = ap.parse_args()
    port = args.port or free_port()
    server = ModbusTcpServer(
        build_context(),
        address=("127.0.0.1", port),
        ignore_missing_slaves=True,
    )
    task = asyncio.create_task(server.serve_forever())
    # Announce the port only once it accepts connections.
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    print(f"PORT {port}", flush=True)
    await task


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
