"""Modbus register decoding and read planning, against values worked out by hand.

A register is a 16-bit word sent high byte first. 32-bit values span two registers; devices differ
in which comes first ("big": the high word at the lower address, "little": the low word)."""

from __future__ import annotations

import math

import pytest

from edge_agents.config import ModbusRegister
from edge_agents.sources.modbus import ReadBlock, decode_registers, plan_reads


@pytest.mark.parametrize(
    ("words", "type_", "expected"),
    [
        ([0x0000], "uint16", 0.0),
        ([0x04D2], "uint16", 1234.0),
        ([0xFFFF], "uint16", 65535.0),
        ([0x7FFF], "int16", 32767.0),
        ([0x8000], "int16", -32768.0),
        ([0xFF9C], "int16", -100.0),  # 0x10000 - 0xFF9C = 100
        ([0xFFFF], "int16", -1.0),
    ],
)
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_16_bit_types_ignore_word_order(words: list[int], type_: str, expected: float, word_order: str) -> None:
    assert decode_registers(words, type_, word_order) == expected


@pytest.mark.parametrize(
    ("words", "type_", "word_order", "expected"),
    [
        # uint32 100000 = 0x0001_86A0
        ([0x0001, 0x86A0], "uint32", "big", 100000.0),
        ([0x86A0, 0x0001], "uint32", "little", 100000.0),
        # 0xFFFF_FFFF: the largest uint32, and -1 as int32
        ([0xFFFF, 0xFFFF], "uint32", "big", 4294967295.0),
        ([0xFFFF, 0xFFFF], "int32", "little", -1.0),
        # int32 -5 = 0xFFFF_FFFB
        ([0xFFFF, 0xFFFB], "int32", "big", -5.0),
        ([0xFFFB, 0xFFFF], "int32", "little", -5.0),
        # int32 -100000 = 0x100000000 - 100000 = 0xFFFE_7960
        ([0xFFFE, 0x7960], "int32", "big", -100000.0),
        ([0x7960, 0xFFFE], "int32", "little", -100000.0),
        # the same words read in the other order are another number: 0x86A0_0001 = 2258632705
        ([0x86A0, 0x0001], "uint32", "big", 2258632705.0),
        # float32 21.5 = 1.34375 × 2^4: sign 0, exponent 127 + 4 = 0x83, mantissa 0.34375 × 2^23 = 0x2C0000
        # → 0 10000011 0101100...0 = 0x41AC_0000
        ([0x41AC, 0x0000], "float32", "big", 21.5),
        ([0x0000, 0x41AC], "float32", "little", 21.5),
        # float32 -2.5 = -1.25 × 2^1: sign 1, exponent 0x80, mantissa 0x200000 → 0xC020_0000
        ([0xC020, 0x0000], "float32", "big", -2.5),
        ([0x0000, 0xC020], "float32", "little", -2.5),
        # float32 3.75 = 1.875 × 2^1: exponent 0x80, mantissa 0.875 × 2^23 = 0x700000 → 0x4070_0000
        ([0x4070, 0x0000], "float32", "big", 3.75),
        ([0x0000, 0x4070], "float32", "little", 3.75),
        # 1.0 = 0x3F80_0000; 0x0000_0001 is the smallest subnormal, 2^-149
        ([0x3F80, 0x0000], "float32", "big", 1.0),
        ([0x0001, 0x0000], "float32", "little", 2.0**-149),
    ],
)
def test_32_bit_types(words: list[int], type_: str, word_order: str, expected: float) -> None:
    assert decode_registers(words, type_, word_order) == expected


def test_float32_special_values() -> None:
    assert decode_registers([0x7F80, 0x0000], "float32", "big") == math.inf
    assert decode_registers([0x0000, 0xFF80], "float32", "little") == -math.inf
    assert math.isnan(decode_registers([0x7FC0, 0x0000], "float32", "big"))


@pytest.mark.parametrize(
    ("words", "type_", "word_order", "message"),
    [
        ([1, 2], "uint16", "big", "uint16 takes 1 register"),
        ([1], "float32", "big", "float32 takes 2 register"),
        ([0x10000], "uint16", "big", "16-bit unsigned"),
        ([-1], "int16", "big", "16-bit unsigned"),
        ([1], "uint8", "big", "unknown register type"),
        ([1, 2], "uint32", "middle", "word_order"),
    ],
)
def test_bad_input_is_refused(words: list[int], type_: str, word_order: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_registers(words, type_, word_order)


def register(address: int, type_: str = "uint16", kind: str = "holding") -> ModbusRegister:
    return ModbusRegister(address=address, type=type_, kind=kind, metric="temp", sensor_id=f"s{address}")


def test_plan_groups_touching_registers_of_one_kind() -> None:
    registers = [
        register(10, "uint32"),  # 10-11
        register(0, "float32"),  # 0-1
        register(2, "int16"),  # 2, touches 0-1
        register(3),  # 3
        register(12),  # 12, touches 10-11
        register(20),  # gap: a read of its own
        register(0, "int32", kind="input"),  # same address, other table
        register(1, kind="input"),  # overlaps the int32 (a device may expose both views)
    ]
    assert plan_reads(registers) == [
        ReadBlock("holding", 0, 4, (1, 2, 3)),
        ReadBlock("holding", 10, 3, (0, 4)),
        ReadBlock("holding", 20, 1, (5,)),
        ReadBlock("input", 0, 2, (6, 7)),
    ]


def test_plan_splits_at_the_protocol_limit() -> None:
    registers = [register(a, "float32") for a in range(0, 300, 2)]  # 150 float32 back to back: 300 words
    blocks = plan_reads(registers)
    assert [(b.start, b.count) for b in blocks] == [(0, 124), (124, 124), (248, 52)]
    assert sorted(i for b in blocks for i in b.registers) == list(range(150))
