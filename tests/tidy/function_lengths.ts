/**
 * @module
 * A small scanner that measures the length of every function in a TypeScript file, for the tidy check
 * that keeps functions short (TigerBeetle's tidy.zig is the model). It is not a parser: it blanks out
 * comments, strings, template text and regular expressions, then matches braces, and calls a `{` a
 * function body when it follows `=>`, or follows `)` (possibly with a return type between) whose `(`
 * is not the condition of `if`, `for`, `while`, `switch`, `catch` or `with`. A function's length counts
 * from the line of its parameter list (or of `=>`) to the line of its closing brace, both included.
 */

/** One function found in a file. */
export interface FunctionSpan {
  /** The function's name (`<arrow>` or `<function>` when it has none); methods carry their class. */
  name: string;
  /** 1-based line of the parameter list (or `=>`). */
  line: number;
  /** Lines from `line` to the closing brace, both included. */
  lines: number;
}

/** Words that, met before a `{` on the way back, show it opens no function (a class, `else`, ...). */
const NOT_A_RETURN_TYPE = new Set([
  "class",
  "interface",
  "enum",
  "namespace",
  "module",
  "else",
  "try",
  "finally",
  "do",
  "return",
  "yield",
  "case",
  "default",
  "extends",
  "implements",
  "type",
]);
const CONTROL = new Set(["if", "for", "while", "switch", "catch", "with", "await", "return"]);
/** Characters after which a `/` starts a regular expression rather than a division. */
const REGEX_AFTER = new Set([..."(,=:[!&|?{};+-*%<>~^"]);
const REGEX_AFTER_WORD = new Set(["return", "typeof", "case", "in", "of", "do", "else", "void", "yield"]);

/**
 * The text with every comment, string, template text and regular expression replaced by spaces
 * (newlines kept, so offsets and line numbers stay as they were).
 */
export function blankNonCode(text: string): string {
  const out = text.split("");
  const blank = (from: number, to: number) => {
    for (let k = from; k < to; k++) if (out[k] !== "\n") out[k] = " ";
  };
  // A stack of brace depths at which a template literal's `${` was opened.
  const templates: number[] = [];
  let depth = 0;
  let i = 0;
  const n = text.length;
  /** Scans template text from i (just past "`" or "}") to its end or a `${`; returns where code resumes. */
  const templateText = (start: number): number => {
    let j = start;
    while (j < n) {
      const c = text[j];
      if (c === "\\") j += 2;
      else if (c === "`") {
        blank(start, j);
        return j + 1;
      } else if (c === "$" && text[j + 1] === "{") {
        blank(start, j);
        templates.push(depth);
        depth++;
        return j + 2;
      } else j++;
    }
    blank(start, n);
    return n;
  };
  while (i < n) {
    const c = text[i]!;
    if (c === "/" && text[i + 1] === "/") {
      const end = text.indexOf("\n", i);
      const stop = end === -1 ? n : end;
      blank(i, stop);
      i = stop;
    } else if (c === "/" && text[i + 1] === "*") {
      const end = text.indexOf("*/", i + 2);
      const stop = end === -1 ? n : end + 2;
      blank(i, stop);
      i = stop;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < n && text[j] !== c && text[j] !== "\n") j += text[j] === "\\" ? 2 : 1;
      blank(i + 1, j);
      i = j + 1;
    } else if (c === "`") {
      i = templateText(i + 1);
    } else if (c === "/" && startsRegex(out, i)) {
      let j = i + 1, inClass = false;
      while (j < n && text[j] !== "\n" && (inClass || text[j] !== "/")) {
        if (text[j] === "\\") j++;
        else if (text[j] === "[") inClass = true;
        else if (text[j] === "]") inClass = false;
        j++;
      }
      blank(i + 1, j);
      i = j + 1;
    } else if (c === "{") {
      depth++;
      i++;
    } else if (c === "}") {
      depth--;
      if (templates.length > 0 && templates[templates.length - 1] === depth) {
        templates.pop();
        i = templateText(i + 1);
      } else i++;
    } else i++;
  }
  return out.join("");
}

/** Whether the `/` at i (in text already blanked up to i) starts a regular expression. */
function startsRegex(code: string[], i: number): boolean {
  let j = i - 1;
  while (j >= 0 && /\s/.test(code[j]!)) j--;
  if (j < 0) return true;
  const prev = code[j]!;
  if (REGEX_AFTER.has(prev)) return true;
  if (!/\w/.test(prev)) return false;
  let k = j;
  while (k >= 0 && /\w/.test(code[k]!)) k--;
  return REGEX_AFTER_WORD.has(code.slice(k + 1, j + 1).join(""));
}

/** Index of the last non-space character before i, or -1. */
function previousCode(code: string, i: number): number {
  let j = i - 1;
  while (j >= 0 && /\s/.test(code[j]!)) j--;
  return j;
}

/** Index of the bracket that opens the one closing at i (`)`, `]`, `}` or a generic's `>`), scanning back. */
function openingOf(code: string, i: number): number {
  const close = code[i]!, open = "([{<"[")]}>".indexOf(close)]!;
  let depth = 0;
  for (let j = i; j >= 0; j--) {
    const c = code[j]!;
    if (c === ">" && code[j - 1] === "=") continue;
    if (c === close) depth++;
    else if (c === open && --depth === 0) return j;
  }
  return -1;
}

/**
 * Where the parameter list of the function whose body opens at `brace` closes, or -1 when the brace
 * opens no function: `) {`, or `): ReturnType {` with the return type at bracket depth 0.
 */
function parameterListEnd(code: string, brace: number): number {
  const p = previousCode(code, brace);
  if (p < 0) return -1;
  if (code[p] === ")") return p;
  if (!/[\w>\]}]/.test(code[p]!) || (code[p] === ">" && code[p - 1] === "=")) return -1;
  // A return type: scan back at depth 0 for ":" right after ")".
  let depth = 0;
  for (let j = p; j >= 0 && j > brace - 400; j--) {
    const c = code[j]!;
    if (c === ">" && code[j - 1] === "=") {
      j--;
      continue;
    }
    if (")]}>".includes(c)) depth++;
    else if ("([{<".includes(c)) {
      if (depth === 0) return -1;
      depth--;
    } else if (depth === 0 && (c === ";" || c === "=")) return -1;
    else if (depth === 0 && /\w/.test(c) && !/[\w$]/.test(code[j - 1] ?? " ")) {
      if (NOT_A_RETURN_TYPE.has(/^\w+/.exec(code.slice(j))![0])) return -1;
    } else if (depth === 0 && c === ":") {
      const q = previousCode(code, j);
      return q >= 0 && code[q] === ")" ? q : -1;
    }
  }
  return -1;
}

/** The word just before index i (skipping spaces and a generic parameter list), or "". */
function wordBefore(code: string, i: number): { word: string; at: number } {
  let j = previousCode(code, i);
  if (j >= 0 && code[j] === ">" && code[j - 1] !== "=") j = previousCode(code, openingOf(code, j));
  let k = j;
  while (k >= 0 && /[\w$#]/.test(code[k]!)) k--;
  return { word: code.slice(k + 1, j + 1), at: k + 1 };
}

/** The name of the arrow function whose `=>` is at i: the first name its line binds, or `<arrow>`. */
function arrowName(code: string, arrow: number): string {
  const lineStart = code.lastIndexOf("\n", arrow) + 1;
  const m = /^\s*(?:export\s+)?(?:(?:const|let|var|readonly|static|private|async)\s+)*(#?[\w$]+)\s*[:=?(]/
    .exec(code.slice(lineStart, arrow));
  return m ? m[1]! : "<arrow>";
}

/** Every function in `text` with its length, in order of appearance. */
export function functionSpans(text: string): FunctionSpan[] {
  const code = blankNonCode(text);
  const lineAt: number[] = [];
  for (let i = 0, line = 1; i < code.length; i++) {
    lineAt.push(line);
    if (code[i] === "\n") line++;
  }
  const lineOf = (i: number) => lineAt[i]!;
  const spans: FunctionSpan[] = [];
  const stack: { at: number; name?: string; start?: number }[] = [];
  const classes: { name: string; depth: number }[] = [];
  for (let i = 0; i < code.length; i++) {
    const c = code[i];
    if (c === "{") {
      const entry = classify(code, i);
      const cls = /\bclass\s+([\w$]+)[^{;]*$/.exec(code.slice(Math.max(0, i - 300), i));
      if (cls && entry.name === undefined) classes.push({ name: cls[1]!, depth: stack.length });
      if (entry.name !== undefined && classes.length > 0 && classes.at(-1)!.depth === stack.length - 1) {
        entry.name = `${classes.at(-1)!.name}.${entry.name}`;
      }
      stack.push({ at: i, ...entry });
    } else if (c === "}") {
      const open = stack.pop();
      if (open === undefined) continue;
      if (classes.length > 0 && classes.at(-1)!.depth === stack.length) classes.pop();
      if (open.name !== undefined && open.start !== undefined) {
        const line = lineOf(open.start);
        spans.push({ name: open.name, line, lines: lineOf(i) - line + 1 });
      }
    }
  }
  return spans.sort((a, b) => a.line - b.line);
}

/** Whether the `{` at i opens a function body, and if so the function's name and where it starts. */
function classify(code: string, i: number): { name?: string; start?: number } {
  const p = previousCode(code, i);
  if (p > 0 && code[p] === ">" && code[p - 1] === "=") return { name: arrowName(code, p - 1), start: p - 1 };
  const close = parameterListEnd(code, i);
  if (close < 0) return {};
  const open = openingOf(code, close);
  if (open < 0) return {};
  const { word, at } = wordBefore(code, open);
  if (CONTROL.has(word)) return {};
  if (word === "function" || word === "") return { name: "<function>", start: open };
  const before = wordBefore(code, at).word;
  if (before === "new") return {};
  return { name: word, start: open };
}
