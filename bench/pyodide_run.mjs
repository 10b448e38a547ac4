// Runs one Python file of bench/ under Pyodide (the interpreter of Python Workers), from the
// npm `pyodide` package, with src/ and python_modules/ mounted as the Worker bundles them.
//
//   node bench/pyodide_run.mjs bench/pyodide_scram.py
//
// The file defines `def main()` returning something JSON-able; stdout carries exactly one JSON
// document {"result": ..., "runtime": {...}}. No network: Pyodide loads from node_modules.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPyodide } from "pyodide";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const script = path.resolve(process.argv[2] ?? "");
const indexURL = path.dirname(createRequire(import.meta.url).resolve("pyodide/package.json"));
const pyodide = await loadPyodide({
  indexURL: indexURL + path.sep,
  stdout: (line) => process.stderr.write(`[py] ${line}\n`),
  stderr: (line) => process.stderr.write(`[py] ${line}\n`),
});
pyodide.mountNodeFS("/repo/src", path.join(repo, "src"));
pyodide.mountNodeFS("/repo/python_modules", path.join(repo, "python_modules"));
pyodide.mountNodeFS("/repo/bench", path.dirname(script));
pyodide.globals.set("SCRIPT", `/repo/bench/${path.basename(script)}`);
const out = await pyodide.runPythonAsync(`
import json, runpy, sys
sys.dont_write_bytecode = True
sys.path[:0] = ["/repo/bench", "/repo/src", "/repo/python_modules"]
json.dumps({
    "result": runpy.run_path(SCRIPT, run_name="__bench__")["main"](),
    "runtime": {"python": sys.version.split()[0], "platform": sys.platform},
})
`);
const report = JSON.parse(out);
report.runtime.pyodide = pyodide.version;
report.runtime.node = process.version;
process.stdout.write(`${JSON.stringify(report)}\n`);
