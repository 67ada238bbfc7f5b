// `qlora-native doctor [--json]`: reports what this installation can do.
import type { CommandModule } from "yargs";
import { doctor, formatDoctor } from "../api/doctor.js";

export const doctorCommand: CommandModule<object, { json: boolean }> = {
  command: "doctor",
  describe: "Report backends, CPU features, GPUs, driver/runtime and cuBLASLt",
  builder: (y) =>
    y
      .option("json", { type: "boolean", default: false, describe: "print one JSON object" })
      .example("$0 doctor", "human-readable report")
      .example("$0 doctor --json", "machine-readable report"),
  handler: (argv) => {
    const report = doctor();
    process.stdout.write((argv.json ? JSON.stringify(report) : formatDoctor(report)) + "\n");
    if (!report.addon.loaded) process.exitCode = 1;
  },
};
