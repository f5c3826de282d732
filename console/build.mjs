// Copy the console's third-party browser assets from node_modules (installed by `npm ci` from
// package-lock.json) into the Python package, which serves them at /ui/static/vendor/.
// Run by `make console-assets`; the output is not committed.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "src", "openmaas", "api", "ui", "static", "vendor");
mkdirSync(target, { recursive: true });

const chart = join(here, "node_modules", "chart.js");
// The source map is not shipped: drop the comment that would make developer tools ask for it.
const script = readFileSync(join(chart, "dist", "chart.umd.min.js"), "utf8")
  .replace(/\n\/\/# sourceMappingURL=.*\s*$/, "\n");
writeFileSync(join(target, "chart.umd.js"), script);
copyFileSync(join(chart, "LICENSE.md"), join(target, "chart.js-LICENSE.md"));
console.log(`console assets written to ${target}`);
