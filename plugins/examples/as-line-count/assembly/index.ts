// A cairn task plugin in AssemblyScript: counts the lines of the task's input files and, with
// `config.max_lines`, fails the files that have more.
import { Config, Host } from "@extism/as-pdk";
import { describe as description, diagnostic, failure, parse, taskReply } from "./cairn";

export function abort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  Host.outputString(failure("internal", "as-line-count aborted: " + (message == null ? "" : message)));
}

export function describe(): i32 {
  Host.outputString(
    description(
      "as-line-count",
      "0.1.0",
      "task",
      "Counts lines; files over max_lines fail (AssemblyScript)",
      '[{"name":"max_lines","kind":"integer","required":false,"description":"the most lines a file may have"}]',
    ),
  );
  return 0;
}

export function run_task(): i32 {
  const request = parse(Host.inputString());
  if (request == null) {
    Host.outputString(failure("invalid", "the request is not JSON"));
    return 0;
  }
  const limitText = Config.get("max_lines");
  const limit = limitText == null ? -1 : i32(parseInt(limitText, 10));
  const files = request.list("files");
  const diagnostics: Array<string> = [];
  let total = 0;
  for (let i = 0; i < files.length; i++) {
    const path = files[i].str("path");
    const contents = files[i].str("contents");
    let lines = 0;
    for (let c = 0; c < contents.length; c++) {
      if (contents.charCodeAt(c) == 10) lines++;
    }
    if (contents.length > 0 && contents.charCodeAt(contents.length - 1) != 10) lines++;
    total += lines;
    if (limit >= 0 && lines > limit) {
      diagnostics.push(
        diagnostic(path, limit + 1, 1, "error", "has " + lines.toString() + " lines; at most " + limit.toString() + " allowed"),
      );
    }
  }
  const output = "counted " + total.toString() + " line(s) in " + files.length.toString() + " file(s)";
  Host.outputString(taskReply(diagnostics.length > 0 ? 1 : 0, diagnostics, output));
  return 0;
}
