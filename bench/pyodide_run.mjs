// Runs one Python file of bench/ under Pyodide (the interpreter of Python Workers), from the
// npm `pyodide` package, with src/ and python_modules/ mounted as the Worker bundles them.
//
//   node bench/pyodide_run.mjs bench/pyodide_scram.py
//
// The file defines `def main()` returning something JSON-able (or a coroutine of it, awaited
// here); stdout carries exactly one JSON document {"result": ..., "runtime": {...}}.
// SYNC_REQUEST_FIXTURE (a file of recorded requests, bench/request_cpu.py) is mounted and
// passed on under the same name. No network: Pyodide loads from node_modules.
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
const fixture = process.env.SYNC_REQUEST_FIXTURE;
if (fixture) {
  pyodide.mountNodeFS("/fixture", path.dirname(path.resolve(fixture)));
  pyodide.globals.set("FIXTURE", `/fixture/${path.basename(fixture)}`);
} else {
  pyodide.globals.set("FIXTURE", null);
}
const out = await pyodide.runPythonAsync(`
import inspect, json, os, runpy, sys
sys.dont_write_bytecode = True
sys.path[:0] = ["/repo/bench", "/repo/src", "/repo/python_modules"]
if FIXTURE:
    os.environ["SYNC_REQUEST_FIXTURE"] = FIXTURE
result = runpy.run_path(SCRIPT, run_name="__bench__")["main"]()
if inspect.isawaitable(result):
    result = await result
json.dumps({
    "result": result,
    "runtime": {"python": sys.version.split()[0], "platform": sys.platform},
})
`);
const report = JSON.parse(out);
report.runtime.pyodide = pyodide.version;
report.runtime.node = process.version;
process.stdout.write(`${JSON.stringify(report)}\n`);
