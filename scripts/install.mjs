#!/usr/bin/env node
// npm install hook: use a prebuilt addon when node-gyp-build finds one for this platform
// (prebuilds/, made by `npm run prebuild`), otherwise compile from source with cmake-js.
// QN_BUILD_FROM_SOURCE=1 forces the compile.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);

if (!process.env.QN_BUILD_FROM_SOURCE) {
  try {
    const found = require("node-gyp-build").resolve(root);
    if (found.includes(`${path.sep}prebuilds${path.sep}`)) {
      console.log(`qlora-native: using prebuilt addon ${path.relative(root, found)}`);
      process.exit(0);
    }
  } catch {
    // no prebuild: compile below
  }
}
const cmakeJs = path.join(path.dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
const r = spawnSync(process.execPath, [cmakeJs, "compile", "--CDQN_BUILD_TESTS=OFF"], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
