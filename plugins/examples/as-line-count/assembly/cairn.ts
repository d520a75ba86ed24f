// The typed helper for cairn's plugin protocol in AssemblyScript: a small JSON reader for requests and the
// writers of replies. cairn speaks JSON over Extism, so any language with an Extism PDK can be a plugin; this
// is all AssemblyScript needs besides @extism/as-pdk. Protocol reference: docs/plugins.md.

/** The protocol version this helper speaks. */
export const PROTOCOL: i32 = 1;

/** A JSON value as read from a request. */
export class Json {
  kind: u8 = 0; // 0 null, 1 boolean, 2 number, 3 string, 4 array, 5 object
  flag: bool = false;
  number: f64 = 0;
  text: string = "";
  items: Array<Json> = [];
  keys: Array<string> = [];

  /** The member `key` of an object, or null. */
  get(key: string): Json | null {
    for (let i = 0; i < this.keys.length; i++) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  /** The member `key` as a string, or `fallback`. */
  str(key: string, fallback: string = ""): string {
    const value = this.get(key);
    return value != null && value.kind == 3 ? value.text : fallback;
  }

  /** The member `key` as an array (empty when absent). */
  list(key: string): Array<Json> {
    const value = this.get(key);
    return value != null && value.kind == 4 ? value.items : [];
  }
}

/** Thrown (as a failed parse) when the input is not JSON. */
class Reader {
  pos: i32 = 0;
  failed: bool = false;
  constructor(public src: string) {}

  skip(): void {
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      if (c == 32 || c == 9 || c == 10 || c == 13) this.pos++;
      else break;
    }
  }

  value(): Json {
    this.skip();
    const out = new Json();
    if (this.pos >= this.src.length) {
      this.failed = true;
      return out;
    }
    const c = this.src.charCodeAt(this.pos);
    if (c == 123) {
      // {
      out.kind = 5;
      this.pos++;
      this.skip();
      if (this.src.charCodeAt(this.pos) == 125) {
        this.pos++;
        return out;
      }
      while (!this.failed) {
        this.skip();
        const key = this.string();
        this.skip();
        if (this.src.charCodeAt(this.pos) != 58) {
          this.failed = true;
          break;
        }
        this.pos++;
        out.keys.push(key);
        out.items.push(this.value());
        this.skip();
        const next = this.src.charCodeAt(this.pos);
        this.pos++;
        if (next == 125) break;
        if (next != 44) this.failed = true;
      }
    } else if (c == 91) {
      // [
      out.kind = 4;
      this.pos++;
      this.skip();
      if (this.src.charCodeAt(this.pos) == 93) {
        this.pos++;
        return out;
      }
      while (!this.failed) {
        out.items.push(this.value());
        this.skip();
        const next = this.src.charCodeAt(this.pos);
        this.pos++;
        if (next == 93) break;
        if (next != 44) this.failed = true;
      }
    } else if (c == 34) {
      out.kind = 3;
      out.text = this.string();
    } else if (this.src.startsWith("true", this.pos)) {
      out.kind = 1;
      out.flag = true;
      this.pos += 4;
    } else if (this.src.startsWith("false", this.pos)) {
      out.kind = 1;
      this.pos += 5;
    } else if (this.src.startsWith("null", this.pos)) {
      this.pos += 4;
    } else {
      const start = this.pos;
      while (this.pos < this.src.length) {
        const d = this.src.charCodeAt(this.pos);
        if ((d >= 48 && d <= 57) || d == 45 || d == 43 || d == 46 || d == 101 || d == 69) this.pos++;
        else break;
      }
      if (start == this.pos) this.failed = true;
      out.kind = 2;
      out.number = parseFloat(this.src.substring(start, this.pos));
    }
    return out;
  }

  string(): string {
    if (this.src.charCodeAt(this.pos) != 34) {
      this.failed = true;
      return "";
    }
    this.pos++;
    let out = "";
    let run = this.pos;
    while (this.pos < this.src.length) {
      const c = this.src.charCodeAt(this.pos);
      if (c == 34) {
        out += this.src.substring(run, this.pos);
        this.pos++;
        return out;
      }
      if (c == 92) {
        out += this.src.substring(run, this.pos);
        const e = this.src.charCodeAt(this.pos + 1);
        this.pos += 2;
        if (e == 110) out += "\n";
        else if (e == 116) out += "\t";
        else if (e == 114) out += "\r";
        else if (e == 98) out += "\b";
        else if (e == 102) out += "\f";
        else if (e == 117) {
          out += String.fromCharCode(i32(parseInt(this.src.substring(this.pos, this.pos + 4), 16)));
          this.pos += 4;
        } else out += String.fromCharCode(e);
        run = this.pos;
      } else {
        this.pos++;
      }
    }
    this.failed = true;
    return out;
  }
}

/** Reads a request; null when it is not JSON. */
export function parse(text: string): Json | null {
  const reader = new Reader(text);
  const value = reader.value();
  return reader.failed ? null : value;
}

/** `text` as a JSON string literal. */
export function quote(text: string): string {
  let out = '"';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 34) out += '\\"';
    else if (c == 92) out += "\\\\";
    else if (c == 10) out += "\\n";
    else if (c == 13) out += "\\r";
    else if (c == 9) out += "\\t";
    else if (c < 32) out += "\\u00" + (c < 16 ? "0" : "") + c.toString(16);
    else out += String.fromCharCode(c);
  }
  return out + '"';
}

/** The `describe` answer. `config` is a JSON array of settings (`[]` for none). */
export function describe(name: string, version: string, capability: string, description: string, config: string): string {
  return (
    '{"ok":{"name":' + quote(name) + ',"version":' + quote(version) + ',"protocol":' + PROTOCOL.toString() +
    ',"capabilities":[' + quote(capability) + '],"config":' + config + ',"description":' + quote(description) + "}}"
  );
}

/** One diagnostic of a task reply. */
export function diagnostic(path: string, line: i32, column: i32, severity: string, message: string): string {
  return (
    '{"path":' + quote(path) + ',"line":' + line.toString() + ',"column":' + column.toString() +
    ',"severity":' + quote(severity) + ',"message":' + quote(message) + "}"
  );
}

/** A task reply: its status, its diagnostics (from `diagnostic`) and its output. */
export function taskReply(status: i32, diagnostics: Array<string>, output: string): string {
  return '{"ok":{"status":' + status.toString() + ',"diagnostics":[' + diagnostics.join(",") + '],"output":' + quote(output) + "}}";
}

/** A typed failure: `code` is one of the protocol's error codes (`invalid`, `not_found`, …). */
export function failure(code: string, message: string): string {
  return '{"error":{"code":' + quote(code) + ',"message":' + quote(message) + ',"retryable":false}}';
}
