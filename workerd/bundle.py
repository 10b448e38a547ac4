"""Builds the dev Pyodide bundle that workerd loads offline: `pyodide_dev.capnp.bin`.

    python -m workerd.bundle          # prints the cache directory to pass workerd

Why: workerd downloads its Python runtime for our compatibility date and checks it against
a sha256 built into the binary, so a rebuilt file can never pass and `wrangler dev` fails
offline. The experimental flag `python_workers_development` makes workerd read
`<--pyodide-bundle-disk-cache-dir>/pyodide_dev.capnp.bin` instead, unchecked, and this
binary maps `dev` to Pyodide 314.0.6, the version production runs (it refuses any other:
"Pyodide version mismatch").

Sources, all from the npm packages pinned in package-lock.json:
- `node_modules/pyodide/` (pyodide@314.0.6): pyodide.asm.mjs, pyodide.asm.wasm,
  python_stdlib.zip;
- `node_modules/workerd/bin/workerd` (what wrangler pulls in): the helpers its
  `pyodide-internal:builtin_wrappers` exports, which the patched glue imports.

The bundle is a capnp `jsg::Bundle` (workerd: src/workerd/jsg/modules.capnp) of three
internal modules, as workerd's src/pyodide/helpers.bzl assembles it:
`pyodideRuntime-internal:pyodide.asm` (the glue with the text patches below),
`…:pyodide.asm.wasm` and `…:python_stdlib.zip`.

Idempotent: the result is cached under .workerd/ with a stamp of every input's digest,
and rebuilt only when one changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from workerd.capnp import Module, bundle_message

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WORKERD_CACHE") or ROOT / ".workerd").resolve()
BUNDLE_DIR = CACHE / "pyodide-bundles"
BUNDLE = BUNDLE_DIR / "pyodide_dev.capnp.bin"
PYODIDE_DIR = ROOT / "node_modules" / "pyodide"
PYODIDE_VERSION = "314.0.6"  # what this workerd maps `dev` to; it refuses any other
PRELUDE_FROM = "pyodide-internal:builtin_wrappers"
FORMAT = 1  # bump when the patches or the layout change, to invalidate caches


def workerd_binary() -> Path:
    """The workerd npm ships (a hard link to @cloudflare/workerd-<platform>); WORKERD_BIN
    overrides."""
    shipped = ROOT / "node_modules" / "workerd" / "bin" / "workerd"
    return Path(os.environ.get("WORKERD_BIN") or shipped)


@dataclass(frozen=True)
class Patch:
    """One text substitution of helpers.bzl: every occurrence of `old` becomes `new`, which
    calls the `helpers` imported from builtin_wrappers."""

    old: str
    new: str
    helpers: tuple[str, ...] = ()


_NO_EVAL = (
    "(() => {throw new Error('Internal Emscripten code tried to eval, this should not happen')})()"
)

# helpers.bzl's _REPLACEMENTS_COMMON + _REPLACEMENTS_COMMON_314, in its order. Each swaps
# a host facility the isolate must control (wasm compilation, clocks, randomness, eval,
# dynamic-library lookup) for workerd's wrapper.
PATCHES: tuple[Patch, ...] = (
    Patch("new WebAssembly.Module", "newWasmModule", ("newWasmModule",)),
    Patch("WebAssembly.instantiate", "wasmInstantiate", ("wasmInstantiate",)),
    Patch("Date.now", "monotonicDateNow", ("monotonicDateNow",)),
    Patch(
        "reportUndefinedSymbols()",
        "reportUndefinedSymbolsPatched(Module)",
        ("reportUndefinedSymbolsPatched",),
    ),
    Patch("crypto.getRandomValues(", "getRandomValues(Module, ", ("getRandomValues",)),
    Patch("eval(func)", _NO_EVAL),
    Patch("eval(data)", _NO_EVAL),
    Patch("eval(UTF8ToString(ptr))", _NO_EVAL),
    Patch(
        "function loadLibData(){",
        "function loadLibData(){"
        "var libData = patchedLoadLibData(Module, libName, flags.rpath);"
        "return flags.loadAsync ? Promise.resolve(libData) : libData;}"
        "function dummiedOutOrigLoadLibData(){",
        ("patchedLoadLibData",),
    ),
    # Module.getMemoryPatched is set by workerd's setup code, not imported.
    Patch("getMemory(", "Module.getMemoryPatched(Module, libName, "),
    Patch(
        "function _PyEM_CountFuncParams(func){",
        "function _PyEM_CountFuncParams(func){ return patched_PyEM_CountFuncParams(Module, func);",
        ("patched_PyEM_CountFuncParams",),
    ),
    Patch(
        "var tableBase=metadata.tableSize?wasmTable.length:0;",
        "var tableBase=metadata.tableSize?wasmTable.length:0;"
        "Module.snapshotDebug && "
        "console.log('loadWebAssemblyModule', libName, memoryBase, tableBase);",
    ),
    Patch(
        'console.error("Recursive call to fatal_error. Inner error was:");',
        'console.error("Recursive call to fatal_error. Inner error was:");\n'
        "try { API.on_fatal?.(e); } catch(e2) { console.error(e2); }\n",
    ),
)
# Names the glue uses as free variables; the prelude shadows the globals with workerd's.
SHADOWED_GLOBALS = ("location", "addEventListener")
EXPORT_OLD = "export default _createPyodideModule;"
# workerd's emscriptenSetup imports the named export.
EXPORT_NEW = "export default _createPyodideModule; export { _createPyodideModule };"


def exported_helpers(binary: Path, names: set[str]) -> set[str]:
    """Which of `names` the binary's embedded JS exports (`export function NAME(` or
    `export const NAME`): an import of a missing one would fail to link the module."""
    blob = binary.read_bytes()
    found = set()
    for name in names:
        pattern = rb"export (?:async )?(?:function|const|let) " + re.escape(name.encode()) + rb"\b"
        if re.search(pattern, blob):
            found.add(name)
    return found


def patch_glue(source: str, exported: set[str]) -> tuple[str, list[str]]:
    """The patched pyodide.asm.mjs and a note per patch that was not applied.

    A patch is dropped when its pattern is absent from this Pyodide (its code moved on)
    or when it calls a helper this workerd no longer exports (then the glue keeps its own
    code path, as upstream does once such a helper is retired)."""
    notes: list[str] = []
    imports = [name for name in SHADOWED_GLOBALS if name in exported]
    for patch in PATCHES:
        missing = [name for name in patch.helpers if name not in exported]
        if missing:
            notes.append(f"skipped {patch.old!r}: workerd does not export {', '.join(missing)}")
            continue
        if patch.old not in source:
            notes.append(f"skipped {patch.old!r}: not in this pyodide.asm.mjs")
            continue
        source = source.replace(patch.old, patch.new)
        imports += [name for name in patch.helpers if name not in imports]
    if source.count(EXPORT_OLD) != 1:
        raise RuntimeError(f"pyodide.asm.mjs: expected one {EXPORT_OLD!r}")
    prelude = f"import {{ {', '.join(sorted(imports))} }} from {json.dumps(PRELUDE_FROM)};\n"
    return source.replace(EXPORT_OLD, prelude + EXPORT_NEW), notes


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def check_pyodide() -> None:
    version = json.loads((PYODIDE_DIR / "package.json").read_text())["version"]
    if version != PYODIDE_VERSION:
        raise RuntimeError(
            f"node_modules/pyodide is {version}; workerd's dev bundle must be {PYODIDE_VERSION} "
            "(pinned in package.json): run npm ci"
        )


def build(say=print) -> Path:
    """Builds the bundle if its inputs changed; returns the directory to give workerd."""
    check_pyodide()
    binary = workerd_binary()
    glue = (PYODIDE_DIR / "pyodide.asm.mjs").read_bytes()
    wasm = (PYODIDE_DIR / "pyodide.asm.wasm").read_bytes()
    stdlib = (PYODIDE_DIR / "python_stdlib.zip").read_bytes()
    stamp_path = BUNDLE_DIR / "pyodide_dev.stamp"
    stat = binary.stat()
    stamp = json.dumps(
        {
            "format": FORMAT,
            "inputs": _digest(glue, wasm, stdlib, Path(__file__).read_bytes()),
            # The binary is 160 MB: its identity by size and mtime, not by hashing it.
            "workerd": [str(binary.resolve()), stat.st_size, stat.st_mtime_ns],
        },
        sort_keys=True,
    )
    if BUNDLE.exists() and stamp_path.exists() and stamp_path.read_text() == stamp:
        return BUNDLE_DIR
    wanted = {name for patch in PATCHES for name in patch.helpers} | set(SHADOWED_GLOBALS)
    exported = exported_helpers(binary, wanted)
    patched, notes = patch_glue(glue.decode(), exported)
    for note in notes:
        say(f"workerd bundle: {note}")
    message = bundle_message(
        [
            Module("pyodideRuntime-internal:pyodide.asm", "src", patched.encode()),
            Module("pyodideRuntime-internal:pyodide.asm.wasm", "wasm", wasm),
            Module("pyodideRuntime-internal:python_stdlib.zip", "data", stdlib),
        ]
    )
    BUNDLE_DIR.mkdir(parents=True, exist_ok=True)
    partial = BUNDLE.with_suffix(".partial")
    partial.write_bytes(message)
    partial.replace(BUNDLE)  # never a half-written bundle under the name workerd reads
    stamp_path.write_text(stamp)
    say(f"workerd bundle: wrote {BUNDLE} ({len(message) / 1e6:.1f} MB)")
    return BUNDLE_DIR


if __name__ == "__main__":
    print(build(say=lambda line: print(line, file=sys.stderr)))
