// The VS Code side of nba's rule language: starts `nba lsp` (settings nba.lsp.command and
// nba.lsp.args) and connects it to .rules files. Highlighting is the TextMate grammar in
// syntaxes/, which works without the server.
"use strict";

const path = require("path");
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function serverOptions(config) {
  const command = config.get("lsp.command", "nba");
  const args = config.get("lsp.args", ["lsp"]);
  const folder = vscode.workspace.workspaceFolders && vscode.workspace.workspaceFolders[0];
  // A relative command path (./.venv/bin/nba) is relative to the first workspace folder.
  const resolved =
    folder && (command.startsWith("./") || command.startsWith("../"))
      ? path.join(folder.uri.fsPath, command)
      : command;
  return { command: resolved, args, options: folder ? { cwd: folder.uri.fsPath } : {} };
}

function rulesetRoots(config) {
  const folder = vscode.workspace.workspaceFolders && vscode.workspace.workspaceFolders[0];
  return config
    .get("rulesets", [])
    .map((root) => (path.isAbsolute(root) || !folder ? root : path.join(folder.uri.fsPath, root)));
}

async function start() {
  const config = vscode.workspace.getConfiguration("nba");
  if (!config.get("lsp.enabled", true)) {
    return;
  }
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "nba-rules" }],
    initializationOptions: {
      rulesets: rulesetRoots(config),
      debounceMs: config.get("debounceMs", 0),
    },
    synchronize: {
      // files changed outside the editor (git checkout, another tool) are checked again
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.rules"),
    },
  };
  client = new LanguageClient("nba", "nba rules", serverOptions(config), clientOptions);
  try {
    await client.start();
  } catch (err) {
    vscode.window.showErrorMessage(
      `nba rules: could not start the language server (${serverOptions(config).command}): ${err.message}. ` +
        "Set nba.lsp.command to the nba command of the environment where nba is installed."
    );
  }
}

async function stop() {
  if (client) {
    const running = client;
    client = undefined;
    await running.stop();
  }
}

async function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("nba")) {
        await stop();
        await start();
      }
    }),
    vscode.commands.registerCommand("nba.restartServer", async () => {
      await stop();
      await start();
    })
  );
  await start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
