// Runs a Python scenario inside Pyodide, the interpreter Python Workers run on, with the
// repository's src/ and python_modules/ mounted as they are bundled into the Worker.
//
//   node tests/pyodide/harness.mjs tests/pyodide/scenario_app.py
//
// A scenario file defines `async def main()`; its JSON-able return value is reported.
// stdout carries exactly one JSON document (the scenario's own prints go to stderr):
//   ok, result, error, violations, runtime, imports, ssl_importers, new_modules, timings_ms
// Exit status: 0 ok, 1 a forbidden module was imported, 2 the scenario raised.
//
// Why track imports: CPython tests can't tell whether `sync` or a vendored package reaches
// for a module the Worker lacks or must not touch. Pyodide preloads some of them
// (ssl, lzma, threading, pyodide) at start-up, so a before/after diff of sys.modules alone
// misses them; the harness also wraps builtins.__import__ while the scenario runs and
// records every (importer, imported) pair, cached hits included.
//
// No network: Pyodide loads from node_modules/pyodide and is given nothing to fetch.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPyodide } from "pyodide";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

// Never acceptable in the Worker: native modules the Workers runtime does not ship, and
// thread-based executors (threads can be imported there but do not run).
const NEVER = [
  "sqlite3",
  "_sqlite3",
  "lzma",
  "_lzma",
  "cryptography",
  "multiprocessing",
  "concurrent.futures.thread",
  "concurrent.futures.process",
];

// Importable only by the importers listed (a module and its submodules count alike).
// The runtime's own modules: only the adapter (src/entry.py), the workers SDK and
// Pyodide itself may use them, so `sync` and the libraries stay runnable under CPython.
const RUNTIME_IMPORTERS = ["entry", "__scenario__", "workers", "pyodide", "_pyodide", "pyodide_js"];
// sync.signatures alone reaches WebCrypto (`js` and `pyodide.ffi`, inside its functions, on
// Pyodide only): native signature checks, the one runtime service `sync` itself uses.
const CRYPTO_IMPORTERS = [...RUNTIME_IMPORTERS, "sync.signatures"];
// ssl is a stub without TLS in Pyodide 314. scramp.core does `from ssl import SSLObject,
// SSLSocket` for channel binding, which pg8000 never uses with ssl_context=False;
// jwt.jwks_client (loaded by `import jwt`) imports SSLContext for its urllib client,
// which `sync` does not use; http.client and urllib.request probe for ssl at import.
const RESTRICTED = {
  js: CRYPTO_IMPORTERS,
  pyodide: CRYPTO_IMPORTERS,
  pyodide_js: RUNTIME_IMPORTERS,
  _pyodide: RUNTIME_IMPORTERS,
  workers: RUNTIME_IMPORTERS,
  _cloudflare_compat_flags: RUNTIME_IMPORTERS,
  _pyodide_entrypoint_helper: RUNTIME_IMPORTERS,
  ssl: ["scramp.core", "jwt.jwks_client", "http.client", "urllib.request"],
  _ssl: ["ssl"],
};

const BOOTSTRAP = `
import builtins, hashlib, importlib.util, json, os, runpy, sys, time, traceback

cfg = HARNESS
sys.dont_write_bytecode = True  # the mounts are the host's own directories
# As "python scenario.py" would, the scenario's directory comes first.
sys.path[:0] = [os.path.dirname(cfg["scenario"]), cfg["src"], cfg["python_modules"]]


def top_level_names(directory):
    names = set()
    for entry in os.listdir(directory):
        if entry.endswith(".dist-info") or entry.startswith((".", "_")):
            continue
        names.add(entry.removesuffix(".py"))
    return names


reported = top_level_names(cfg["src"]) | {"__scenario__"}  # whose imports are listed
edges = set()
real_import = builtins.__import__


def tracking_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    importer = (globals or {}).get("__name__") or "?"
    target = name
    if level:
        target = importlib.util.resolve_name("." * level + name, globals.get("__package__") or "")
    edges.add((importer, target.rstrip(".")))
    for item in fromlist or ():
        if f"{target}.{item}" in sys.modules:  # "from pkg import mod" imports pkg.mod
            edges.add((importer, f"{target}.{item}"))
    return module


def under(name, roots):
    return any(name == root or name.startswith(root + ".") for root in roots)


before = set(sys.modules)
started = time.perf_counter()
result = error = None
builtins.__import__ = tracking_import
try:
    scenario = runpy.run_path(cfg["scenario"], run_name="__scenario__")
    result = await scenario["main"]()
except BaseException:
    error = traceback.format_exc()
finally:
    builtins.__import__ = real_import
elapsed_ms = (time.perf_counter() - started) * 1000
new_modules = sorted(set(sys.modules) - before)

violations = [f"{i} imported {t}" for i, t in sorted(edges) if under(t, cfg["never"])]
violations += [f"{m} was loaded" for m in new_modules if under(m, cfg["never"])]
for importer, target in sorted(edges):
    for root, allowed in cfg["restricted"].items():
        if under(target, [root]) and not under(importer, allowed):
            violations.append(f"{importer} imported {target} (allowed only from {allowed})")
ssl_importers = sorted({i for i, t in edges if under(t, ["ssl", "_ssl"])})

imports = {}
for importer, target in edges:
    if importer.split(".")[0] in reported and target != importer:
        imports.setdefault(importer, set()).add(target)

json.dumps(
    {
        "ok": error is None and not violations,
        "result": result,
        "error": error,
        "violations": violations,
        "runtime": {
            "python": sys.version.split()[0],
            "platform": sys.platform,
            "pbkdf2_hmac": hasattr(hashlib, "pbkdf2_hmac"),
            "ssl": getattr(sys.modules.get("ssl"), "OPENSSL_VERSION", None),
        },
        "imports": {k: sorted(v) for k, v in sorted(imports.items())},
        "ssl_importers": ssl_importers,
        "new_modules": new_modules,
        "timings_ms": {"scenario": round(elapsed_ms, 1)},
    },
    default=repr,
)
`;

async function main() {
  const scenario = process.argv[2];
  if (!scenario || !existsSync(scenario)) {
    console.error("usage: node tests/pyodide/harness.mjs SCENARIO.py");
    return 64;
  }
  for (const dir of ["src", "python_modules"]) {
    if (!existsSync(path.join(repo, dir))) {
      console.error(`harness: ${dir}/ is missing; run scripts/vendor.sh (and npm ci) first`);
      return 66;
    }
  }

  const started = Date.now();
  const indexURL = path.dirname(createRequire(import.meta.url).resolve("pyodide/package.json"));
  const pyodide = await loadPyodide({
    indexURL: indexURL + path.sep,
    stdout: (line) => process.stderr.write(`[py] ${line}\n`),
    stderr: (line) => process.stderr.write(`[py] ${line}\n`),
  });
  const loadMs = Date.now() - started;

  pyodide.mountNodeFS("/repo/src", path.join(repo, "src"));
  pyodide.mountNodeFS("/repo/python_modules", path.join(repo, "python_modules"));
  pyodide.mountNodeFS("/scenario", path.dirname(path.resolve(scenario)));
  pyodide.globals.set(
    "HARNESS",
    pyodide.toPy({
      src: "/repo/src",
      python_modules: "/repo/python_modules",
      scenario: `/scenario/${path.basename(scenario)}`,
      never: NEVER,
      restricted: RESTRICTED,
    }),
  );

  const report = JSON.parse(await pyodide.runPythonAsync(BOOTSTRAP));
  report.runtime.pyodide = pyodide.version;
  report.runtime.node = process.version;
  report.timings_ms.load = loadMs;
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);

  if (report.error) {
    console.error(`harness: scenario raised:\n${report.error}`);
    return 2;
  }
  if (report.violations.length) {
    console.error("harness: FORBIDDEN MODULES IMPORTED IN PYODIDE:");
    for (const v of report.violations) console.error(`  ${v}`);
    return 1;
  }
  return 0;
}

process.exitCode = await main();
