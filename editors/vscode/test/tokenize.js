// Tokenizes .rules files with VS Code's TextMate engine (vscode-textmate on the
// vscode-oniguruma regex engine, as the editor does) and prints, as JSON, for each file:
// a list of lines, each a list of tokens {text, scopes}.
//
//   node tokenize.js GRAMMAR.json FILE.rules...
"use strict";

const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

async function main() {
  const [grammarPath, ...files] = process.argv.slice(2);
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async () =>
      vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf-8"), grammarPath),
  });
  const grammar = await registry.loadGrammar("source.nba-rules");
  if (!grammar) {
    throw new Error(`the grammar ${grammarPath} did not load`);
  }
  const out = {};
  for (const file of files) {
    let state = vsctm.INITIAL;
    out[file] = fs
      .readFileSync(file, "utf-8")
      .split(/\r?\n/)
      .map((line) => {
        const result = grammar.tokenizeLine(line, state);
        state = result.ruleStack;
        return result.tokens.map((t) => ({ text: line.substring(t.startIndex, t.endIndex), scopes: t.scopes }));
      });
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
