#!/usr/bin/env node
// Entry point of `npx qlora-native`: runs the compiled CLI (dist/cli/main.js).
import { main } from "../dist/cli/main.js";

await main();
