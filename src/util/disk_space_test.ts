/**
 * @module
 * freeBytes() against df(1) on the same filesystem.
 */

import assert from "node:assert/strict";
import { freeBytes } from "./disk_space.ts";

Deno.test("freeBytes() gives what df gives as available; undefined for a missing path or a sizeless filesystem", async () => {
  const dir = Deno.makeTempDirSync();
  const df = await new Deno.Command("df", { args: ["-B1", "--output=avail", dir], stdout: "piped" }).output();
  const expected = Number(new TextDecoder().decode(df.stdout).trim().split("\n").at(-1));
  const got = freeBytes(dir)!;
  // Other processes write meanwhile: within 64 MiB.
  assert(Math.abs(got - expected) < 64 * 2 ** 20, `${got} against df's ${expected}`);
  assert.equal(freeBytes(`${dir}/missing`), undefined);
  // A filesystem that reports no size (proc here; some FUSE and network mounts) does not know.
  assert.equal(freeBytes("/proc"), undefined);
  Deno.removeSync(dir);
});
