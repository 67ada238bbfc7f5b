#!/usr/bin/env node
// `npm run prebuild`: compiles the addon with cmake-js (N-API 8, so one binary serves every Node
// version that has it), strips it, and places it where node-gyp-build looks:
// prebuilds/<platform>-<arch>/qlora-native.napi.node. (prebuildify drives node-gyp only; this is
// the same layout for a cmake-js build.) `npm install` then uses it instead of compiling.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const cmakeJs = path.join(path.dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js");
const r = spawnSync(process.execPath, [cmakeJs, "rebuild", "--CDQN_BUILD_TESTS=OFF"], { cwd: root, stdio: "inherit" });
if (r.status !== 0) process.exit(r.status ?? 1);
const dir = path.join(root, "prebuilds", `${process.platform}-${process.arch}`);
mkdirSync(dir, { recursive: true });
const dest = path.join(dir, "qlora-native.napi.node");
copyFileSync(path.join(root, "build", "Release", "qlora_native.node"), dest);
spawnSync("strip", ["--strip-unneeded", dest], { stdio: "inherit" });
console.log(`prebuild: ${path.relative(root, dest)}`);
