"""A minimal Cap'n Proto message writer: exactly what a `jsg::Bundle` needs.

Only one schema is written (workerd's src/workerd/jsg/modules.capnp), so a pure-Python
writer of a single-segment message with structs, one composite list and byte blobs is
enough, and saves installing the capnp compiler on every machine that runs the tests.
Layout follows the encoding spec (capnproto.org/encoding.html); the Module layout below
is what `capnp compile -ocapnp modules.capnp` prints for that schema:

    struct Module {  # 8 bytes, 4 ptrs
      name @0 :Text;            # ptr[0]
      union {                   # tag bits [16, 32)
        src @1 :Data;           # ptr[1], union tag = 0
        wasm @4 :Data;          # ptr[1], union tag = 1
        data @5 :Data;          # ptr[1], union tag = 2
        json @6 :Text;          # ptr[1], union tag = 3
      }
      tsDeclaration @3 :Text;   # ptr[2]
      type @2 :ModuleType;      # bits[0, 16)   bundle=0 builtin=1 internal=2
      compileCache @7 :Data;    # ptr[3]
    }
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

WORD = 8
# Which arm of Module's union holds the body, and its tag.
KIND_TAGS = {"src": 0, "wasm": 1, "data": 2, "json": 3}
INTERNAL = 2  # ModuleType.internal: importable by the runtime's own modules only
MODULE_DATA_WORDS, MODULE_POINTERS = 1, 4


@dataclass(frozen=True)
class Module:
    name: str
    kind: str  # one of KIND_TAGS
    body: bytes


class _Segment:
    """One growing segment; positions are in words from its start."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def alloc(self, words: int) -> int:
        at = len(self.buf) // WORD
        self.buf += bytes(words * WORD)
        return at

    def put_word(self, at: int, value: int) -> None:
        struct.pack_into("<Q", self.buf, at * WORD, value)

    def struct_pointer(self, at: int, target: int, data_words: int, pointers: int) -> None:
        offset = (target - (at + 1)) & 0x3FFFFFFF
        self.put_word(at, (offset << 2) | (data_words << 32) | (pointers << 48))

    def list_pointer(self, at: int, target: int, element_size: int, count: int) -> None:
        offset = (target - (at + 1)) & 0x3FFFFFFF
        self.put_word(at, 1 | (offset << 2) | (element_size << 32) | (count << 35))

    def blob(self, at: int, payload: bytes) -> None:
        """A byte list (Data; Text passes its NUL terminator in payload) pointed to from `at`."""
        target = self.alloc(-(-len(payload) // WORD))
        self.buf[target * WORD : target * WORD + len(payload)] = payload
        self.list_pointer(at, target, 2, len(payload))  # element size 2: one byte


def bundle_message(modules: list[Module]) -> bytes:
    """A framed, unpacked message whose root is a `Bundle` of `modules`."""
    seg = _Segment()
    root = seg.alloc(1)
    bundle = seg.alloc(1)  # Bundle: no data, one pointer (modules)
    seg.struct_pointer(root, bundle, 0, 1)
    element_words = MODULE_DATA_WORDS + MODULE_POINTERS
    tag = seg.alloc(1 + element_words * len(modules))
    seg.list_pointer(bundle, tag, 7, element_words * len(modules))  # 7: inline composite
    # The tag word is shaped like a struct pointer whose offset field holds the count.
    seg.put_word(tag, (len(modules) << 2) | (MODULE_DATA_WORDS << 32) | (MODULE_POINTERS << 48))
    for index, module in enumerate(modules):
        start = tag + 1 + index * element_words
        seg.put_word(start, INTERNAL | (KIND_TAGS[module.kind] << 16))
        pointers = start + MODULE_DATA_WORDS
        seg.blob(pointers, module.name.encode() + b"\0")
        body = module.body + b"\0" if module.kind == "json" else module.body
        seg.blob(pointers + 1, body)
    words = len(seg.buf) // WORD
    return struct.pack("<II", 0, words) + bytes(seg.buf)
